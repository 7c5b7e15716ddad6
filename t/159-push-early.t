#!/usr/bin/perl
# Early pushes (docs/decisions/056-push-early.md), write-through, one
# worker.  A client's 1:1 message to a uid whose sessions are all on the
# sender's worker is pushed before Redis answers its append; the sender's
# PUB_ACK still waits for that answer.  Redis is held with CLIENT PAUSE
# WRITE, so the order of events does not rest on timing:
#
#   - while the append waits, the recipient has the push and the sender
#     has no answer; after, the PUB_ACK, and the inbox holds the message
#     until the recipient's ack takes it out (im_pushed_early_total);
#   - the append fails after the recipient acked (OOM at its turn): the
#     sender gets its PUB_ACK, not a refusal;
#   - the append fails before an ack (the inbox key of another type): the
#     sender's answer waits for the ack, and is a refusal once the re-push
#     budget runs out without one (as decision 037's direct delivery);
#   - a group message still waiting for Redis holds back a later 1:1
#     message to one of its members: the member gets them in order;
#   - im_push_early off: the push waits for the append again.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/wait_until/;
use Time::HiRes qw/time/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transport status/;

my $GID = 4159;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

# a paused append is not a dead connection: the watchdog waits long;
# removals leave at once
my $main = <<'M';
im_delivery write_through;
im_redis_timeout 60s;
im_inbox_batch 0;
im_repush_interval 1s;
im_repush_max 1;
im_ping_interval 300s;
im_ping_timeout 5s;
M
write_conf($t, redis => $redis, uc => $uc, main => $main);
$t->run();

my %ws = transport('ws');

sub client {
    my ($uid) = @_;
    my $c = IM::Client->new(%ws, auto_pong => 1, uid => $uid);
    is($c->login("u$uid", 'pw'), 0, "u$uid logs in");
    return $c;
}

sub llen { $redis->cmd(LLEN => "im:inbox:$_[0]") // 0 }

sub pause   { $redis->cmd(CLIENT => 'PAUSE', 60000, 'WRITE') }
sub unpause { $redis->cmd(CLIENT => 'UNPAUSE') }

my $s = client(16001);
my $r = client(16002);
my $m;

# 1. pushed before the append's reply, acked by the sender after it.
# The first message to a uid learns from its PUBLISH's count that no other
# node has a session of it (ngx_im_alone.c): not early.

my $id0 = $s->publish(16002, 'learns');
ok($r->expect(cmd => PUBLISH, msgid => $id0, timeout => 20), 'first push');
$r->ack($id0);
$m = $s->expect(msgid => $id0, timeout => 20);
is($m && $m->{cmd}, PUB_ACK, 'first PUB_ACK');

my $early = status()->{pushed_early};
pause();
my $id1 = $s->publish(16002, 'early');
$m = $r->expect(cmd => PUBLISH, msgid => $id1, timeout => 20);
ok($m, 'the recipient has the push while Redis holds the append');
is($m && $m->{text}, 'early', '... as sent');
ok($s->nothing_for(1), 'no PUB_ACK while the append waits');
unpause();
$m = $s->expect(msgid => $id1, timeout => 20);
is($m && $m->{cmd}, PUB_ACK, 'PUB_ACK once Redis has it');
is(llen(16002), 1, 'the inbox holds it until the ack');
$r->ack($id1);
ok(wait_until(sub { llen(16002) == 0 }, 20), 'the ack takes it out');
is(status()->{pushed_early} - $early, 1, 'im_pushed_early_total counts it');

# 2. acked, then the append fails: delivered, so acknowledged

pause();
my $id2 = $s->publish(16002, 'acked first');
ok($r->expect(cmd => PUBLISH, msgid => $id2, timeout => 20),
    'pushed while the append waits');
$r->ack($id2);
ok($s->nothing_for(1), 'no answer yet');
# the append meets a full Redis at its turn
$redis->cmd(CONFIG => 'SET', 'maxmemory-policy', 'noeviction');
$redis->cmd(CONFIG => 'SET', 'maxmemory', 1);
unpause();
$m = $s->expect(msgid => $id2, timeout => 20);
is($m && $m->{cmd}, PUB_ACK, 'the append failed after the ack: PUB_ACK');
$redis->cmd(CONFIG => 'SET', 'maxmemory', 0);

# 3. the append fails before any ack: the answer waits for one

$redis->cmd(SET => 'im:inbox:16002', 'not a list');
my $id3 = $s->publish(16002, 'append refused');
ok($r->expect(cmd => PUBLISH, msgid => $id3, timeout => 20),
    'pushed, its append refused (WRONGTYPE)');
ok($s->nothing_for(1), 'the sender is not refused while the recipient may '
    . 'still ack');
$r->ack($id3);
$m = $s->expect(msgid => $id3, timeout => 20);
is($m && $m->{cmd}, PUB_ACK, 'PUB_ACK at the ack');

my $q = client(16003);
$redis->cmd(SET => 'im:inbox:16003', 'not a list');
my $t0 = time;
my $id4 = $s->publish(16003, 'never acked');
ok($q->expect(cmd => PUBLISH, msgid => $id4, timeout => 20),
    'pushed to a recipient that does not ack');
$m = $s->expect(msgid => $id4, timeout => 40);
ok($m && $m->{raw} eq invalid_packet(PUBLISH, $id4),
    sprintf('refused once the budget ran out (%.1f s; budget 3 s)',
            time - $t0));
ok(time - $t0 >= 2.5, 'not before the budget');
$redis->cmd(DEL => 'im:inbox:16002', 'im:inbox:16003');
$q->close;

# 4. a group message waiting for Redis holds a later 1:1 message back

# (the re-pushes of what was acked late are left behind first)
$r->drain(1.5);
$redis->select_cmd(1, 'SADD', "im_group:$GID", 16001, 16002);
$early = status()->{pushed_early};
pause();
my $g1 = $s->group_publish($GID, 'group first');
my $d1 = $s->publish(16002, 'then 1:1');
ok($r->nothing_for(1), 'nothing reaches the member while the group '
    . "message's record waits");
unpause();
my @got;
ok(wait_until(sub {
    push @got, grep { ($_->{msgid} // '') eq $g1
                      || ($_->{msgid} // '') eq $d1 } $r->drain(0.2);
    return @got >= 2;
}, 20), 'both arrive');
my %seen;
@got = grep { !$seen{$_->{msgid}}++ } @got;    # a re-push comes later
is(join(' ', map { $_->{msgid} eq $g1 ? 'g1' : 'd1' } @got),
   'g1 d1', 'in the order they were sent');
$r->ack($_->{msgid}, cmd => $IM::Proto::ACK_FOR{$_->{cmd}}) for @got;
is(status()->{pushed_early} - $early, 0, 'the 1:1 message was not early');
$s->drain(1);

# 5. im_push_early off

$_->close for $s, $r;
$t->stop;
write_conf($t, redis => $redis, uc => $uc,
           main => $main . "im_push_early off;\n");
$t->run();
$s = client(16001);
$r = client(16002);
pause();
my $id5 = $s->publish(16002, 'late');
ok($r->nothing_for(1), 'off: no push while the append waits');
unpause();
ok($r->expect(cmd => PUBLISH, msgid => $id5, timeout => 20),
    'off: pushed at the reply');
$m = $s->expect(msgid => $id5, timeout => 20);
is($m && $m->{cmd}, PUB_ACK, 'off: PUB_ACK');
is(status()->{pushed_early}, 0, 'off: nothing counted');

$_->close for $s, $r;
$t->done_testing();
