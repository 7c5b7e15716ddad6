#!/usr/bin/perl
# Delivery without Redis (decision 037), one worker, Redis stopped:
#
#   - to a recipient online here: pushed, and the sender's PUB_ACK waits
#     for the recipient's ack (none while it holds it back);
#   - the recipient never acks: it is re-pushed, its session is closed at
#     the re-push limit, and the sender gets <<10, 3, MsgId>> once the
#     budget im_repush_interval x (im_repush_max + 2) has run out (a
#     refusal after a push: the resend is a duplicate, same MsgId and from);
#   - to an offline recipient: refused at once, nothing pushed;
#   - a group message: refused (its members are not known without Redis);
#   - the counters im_direct_total / im_direct_refused_total, the log line.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transport status/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
write_conf($t, redis => $redis, uc => $uc, main => <<'M');
im_repush_interval 1s;
im_repush_max 1;
im_ping_interval 300s;
im_ping_timeout 5s;
M
$t->run();

my %ws = transport('ws');
my $s = IM::Client->new(%ws, auto_pong => 1, uid => 15001);
my $r = IM::Client->new(%ws, auto_pong => 1, uid => 15002);
my $q = IM::Client->new(%ws, auto_pong => 1, uid => 15003);
is($s->login('u15001', 'pw'), 0, 'sender logs in');
is($r->login('u15002', 'pw'), 0, 'recipient that acks late logs in');
is($q->login('u15003', 'pw'), 0, 'recipient that never acks logs in');

my $id0 = $s->publish(15002, 'with Redis');
ok($s->expect(cmd => PUB_ACK, msgid => $id0), 'with Redis: acked');
ok($r->expect(cmd => PUBLISH, msgid => $id0), 'with Redis: pushed');
$r->ack($id0);

$redis->stop;

# acked after the recipient's ack
my $id1 = $s->publish(15002, 'no Redis, acked late');
my $m = $r->expect(cmd => PUBLISH, msgid => $id1);
ok($m, 'without Redis: pushed to the recipient online here');
is($m && $m->{text}, 'no Redis, acked late', '... as sent');
ok($s->nothing_for(1), 'no answer to the sender while the recipient has '
    . 'not acked');
$r->ack($id1);
$m = $s->expect(msgid => $id1);
is($m && $m->{cmd}, PUB_ACK, 'PUB_ACK once the recipient acked');

# never acked: the refusal after the budget, the session closed before
my $t0 = time;
my $id2 = $s->publish(15003, 'no Redis, never acked');
ok($q->expect(cmd => PUBLISH, msgid => $id2), 'pushed to a recipient that '
    . 'does not ack');
$m = $s->expect(msgid => $id2, timeout => 30);
ok($m && $m->{raw} eq invalid_packet(PUBLISH, $id2),
    sprintf('refused after the budget (%.1f s; budget 3 s)', time - $t0));
ok(time - $t0 >= 2.5, 'not before the budget');
ok($q->wait_closed(10), 'the recipient that did not ack was closed');

# offline: refused at once, nothing pushed
my $id3 = $s->publish(15009, 'no Redis, offline');
$m = $s->expect(msgid => $id3);
ok($m && $m->{raw} eq invalid_packet(PUBLISH, $id3),
    'to an offline recipient: refused');

# a group message: its members cannot be read
my $id4 = $s->group_publish(7, 'no Redis, group');
$m = $s->expect(msgid => $id4);
ok($m && $m->{cmd} == INVALID_PACKET, 'a group message: refused');
# (a re-push of the message it acked late may still be on its way)
my @more = grep { ($_->{msgid} // '') ne $id1 } $r->drain(0.5);
is(join(' ', map { "$_->{cmd}:" . ($_->{text} // '') } @more), '',
    'nothing more reached the recipient');

my $st = status();
is($st->{direct}, 2, 'im_direct_total 2');
is($st->{direct_refused}, 1, 'im_direct_refused_total 1');
my $line = 'im direct: a message delivered without Redis was not acked '
    . 'in 3000 ms: refused';
like($t->error_log, qr/\Q$line\E/, 'the refusal after the budget is logged');

# Redis back: as before
$redis->start;
my $ok = wait_until(sub {
    my $id = $s->publish(15002, 'Redis back');
    my $a = $s->expect(msgid => $id, timeout => 3);
    $r->drain(0.05);
    return $a && $a->{cmd} == PUB_ACK;
}, 20);
ok($ok, 'with Redis back, publishes are acked again');

# the message never acked is not stored: not pushed at the next login
my $q2 = IM::Client->new(%ws, auto_pong => 1, auto_ack => 1, uid => 15003);
is($q2->login('u15003', 'pw'), 0, 'the recipient that did not ack logs in '
    . 'again');
ok(!grep({ ($_->{msgid} // '') eq $id2 } $q2->drain(1)),
    'the refused message was not kept for it');

$_->close for $s, $r, $q2;
$t->done_testing();
