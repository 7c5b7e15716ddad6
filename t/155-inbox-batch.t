#!/usr/bin/perl
# Removals of acked messages held back (im_inbox_batch,
# docs/decisions/051-inbox-removals-held.md): an ack's LREM waits to leave
# with others, and nothing that reads the inbox overtakes it. Two nodes on
# one Redis, one worker each; node a holds removals 30 s (far longer than
# any check here takes, so only the ordering can keep an acked message
# from being read again), node b 300 ms.
#
#   - an ack's removal is held: the message stays in Redis after the ack;
#   - a second device logging in right after the ack, on the same node, is
#     not pushed the acked message (the inbox read sends the removals
#     first);
#   - the same on the other node (the answer to its announcement sends
#     them first);
#   - the admin API's inbox read does not list an acked message;
#   - a uid's last session leaving sends them;
#   - on node b they leave after im_inbox_batch without anything else.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login status/;

my %TIMERS = (
    # quiet pings and re-pushes: what comes is what the store gave
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_repush_max      => '3',
    im_close_grace     => '1s',
);

my $t0 = Test::Nginx->new()->has(qw/http redis/);    # holds the helpers
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");

my $a = IM::Cluster::node(name => 'a', port => 9095, workers => 1,
    redis => $redis, uc => $uc, status => 1,
    timers => { %TIMERS, im_inbox_batch => '30s' },
    locations => 'location /api/ { allow 127.0.0.1; deny all; im_api; }');
my $b = IM::Cluster::node(name => 'b', port => 9096, workers => 1,
    redis => $redis, uc => $uc, status => 1,
    timers => { %TIMERS, im_inbox_batch => '300ms' });
$a->run();
$b->run();

sub user {
    my ($t, $uid, %o) = @_;
    my ($c, $code) = login($t, $uid, %o);
    is($code, 0, "u$uid logs in on node $t->{im_name}"
        . ($o{client_id} ? " (device $o{client_id})" : ''));
    return $c;
}

# the acks node $t has taken (im_status of its one worker)
sub acks { status($_[0]{im_port})->{acked} // -1 }

sub inbox_has {
    my ($uid, $id) = @_;
    my $l = $redis->cmd(LRANGE => "im:inbox:$uid", 0, -1) // [];
    return scalar grep { index($_, $id) >= 0 } @$l;
}

# $from sends to $to, which gets it and acks (auto_ack): wait until node
# $t has taken the ack
sub send_acked {
    my ($t, $from, $to, $text) = @_;
    my $before = acks($t);
    my $id = $from->publish($to->uid, $text);
    ok($from->expect(cmd => PUB_ACK, msgid => $id), "'$text' accepted");
    ok($to->expect(cmd => PUBLISH, msgid => $id), "'$text' pushed");
    ok(wait_until(sub { acks($t) > $before }, 20), "'$text': the ack taken");
    return $id;
}

my $s = user($a, 3001);

# held, then a second device on the same node: not pushed it again
my $r1 = user($a, 3002);
my $m1 = send_acked($a, $s, $r1, 'm1');
ok(inbox_has(3002, $m1), 'm1 acked, its removal held: still in Redis');
my $r1b = user($a, 3002, client_id => 2);
my $m2 = $s->publish(3002, 'm2, after the second login');
ok($s->expect(cmd => PUB_ACK, msgid => $m2), 'm2 accepted');
my $first = $r1b->expect(cmd => PUBLISH);
is($first && $first->{msgid}, $m2,
    "the second device's first push is m2, not the acked m1");
ok(!inbox_has(3002, $m1), 'the login read sent the removal first');

# the other node: its announcement is answered behind the removal
my $r2 = user($a, 3003);
my $m3 = send_acked($a, $s, $r2, 'm3');
ok(inbox_has(3003, $m3), 'm3 acked, its removal held');
my $r2b = user($b, 3003, client_id => 2);
my $m4 = $s->publish(3003, 'm4, after the login on b');
ok($s->expect(cmd => PUB_ACK, msgid => $m4), 'm4 accepted');
$first = $r2b->expect(cmd => PUBLISH);
is($first && $first->{msgid}, $m4,
    "the device on b is pushed m4 first, not the acked m3");
ok(!inbox_has(3003, $m3), "a's answer to b's announcement sent it first");

# the admin API's inbox read
my $r3 = user($a, 3004);
my $m5 = send_acked($a, $s, $r3, 'm5');
ok(inbox_has(3004, $m5), 'm5 acked, its removal held');
my $r = http_get('/api/inbox?uid=3004', port => port(9095)) // '';
like($r, qr/"uid":3004,"messages":\[/, 'the API reads the inbox of 3004');
unlike($r, qr/$m5/, '... without the acked m5');

# the last session of a uid leaves
my $r4 = user($a, 3005);
my $m6 = send_acked($a, $s, $r4, 'm6');
ok(inbox_has(3005, $m6), 'm6 acked, its removal held');
$r4->close(1000);
ok($r4->wait_closed(10), 'u3005 leaves');
ok(wait_until(sub { !inbox_has(3005, $m6) }, 10),
    'its leaving sent the removal');

# node b: held 300 ms, then sent with nothing else happening
my $s2 = user($b, 3006);
my $r5 = user($b, 3007);
my $m7 = send_acked($b, $s2, $r5, 'm7');
ok(wait_until(sub { !inbox_has(3007, $m7) }, 10),
    'on b the removal leaves after im_inbox_batch');

# and no acked message came again to anyone
for my $x ([$r1, 'u3002', $m1], [$r1b, 'u3002 device 2', $m1],
    [$r2, 'u3003', $m3], [$r2b, 'u3003 on b', $m3], [$r3, 'u3004', $m5],
    [$r5, 'u3007', $m7])
{
    my ($c, $name, $id) = @$x;
    my @again = grep { $_->{cmd} == PUBLISH && $_->{msgid} eq $id }
        $c->drain(0.3);
    is(scalar @again, 0, "$name: the acked message is not pushed again");
}

$a->stop();
$b->stop();
$t0->done_testing();
