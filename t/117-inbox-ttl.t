#!/usr/bin/perl
# The inbox key's TTL (write-through, im_offline_ttl 80s here): every entry
# carries its own expiry, and the key im:inbox:<uid> lives im_offline_ttl
# plus a slack of an eighth (90 s here) after it was last given its TTL.
#   - an offline recipient: every append gives the TTL (80 < TTL <= 90);
#   - an online recipient that does not ack: the new list gets its TTL, and
#     ten more appends within the slack give it no more than once (EXPIRE
#     calls in Redis's commandstats), the key keeps a TTL throughout;
#   - an online recipient that acks: the list empties (the key is gone);
#     the next unacked message makes a new list, which gets its TTL again
#     (a key without TTL would live for ever).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
# quiet re-push (60 s): the recipient that does not ack must stay online
# (unacked, re-pushes would close it after im_repush_max on a slow run, and
# its appends would then be an offline uid's)
write_conf($t, redis => $redis, uc => $uc,
    main => "im_offline_ttl 80s;\nim_repush_interval 60s;");
$t->run();

sub ttl { $redis->cmd(TTL => "im:inbox:$_[0]") }

sub expires {
    my $s = $redis->cmd(INFO => 'commandstats');
    return $s =~ /cmdstat_expire:calls=(\d+)/ ? $1 : 0;
}

my $s = IM::Client->new(port => port(9095), auto_pong => 1);
is($s->login('s8000', 'pw'), 0, 'sender logs in');

sub send_to {
    my ($uid, $text) = @_;
    my $id = $s->publish($uid, $text);
    return $s->expect(cmd => PUB_ACK, msgid => $id);
}

# -- offline recipient
ok(send_to(8001, 'off'), 'offline: acked to the sender');
my $ttl = ttl(8001);
ok($ttl > 80 && $ttl <= 90, "offline: the inbox has its TTL ($ttl)");

# -- online, not acking
my $c = IM::Client->new(port => port(9095), auto_pong => 1, auto_ack => 0);
is($c->login('u8002', 'pw'), 0, 'online: recipient logs in (no acks)');
ok(send_to(8002, 'first'), 'online: first message acked to the sender');
ok($c->expect(cmd => PUBLISH, text => 'first'), 'online: pushed');
$ttl = ttl(8002);
ok($ttl > 80 && $ttl <= 90, "online: the new list got its TTL ($ttl)");

my $e0 = expires();
for my $i (1 .. 10) {
    send_to(8002, "more$i");
    $c->expect(cmd => PUBLISH, text => "more$i");
}
my $de = expires() - $e0;
ok($de <= 1, "online: ten appends within the slack, $de EXPIRE");
$ttl = ttl(8002);
ok($ttl > 70 && $ttl <= 90, "online: the key keeps a TTL ($ttl)");
is($redis->cmd(LLEN => 'im:inbox:8002'), 11, 'online: all 11 kept, unacked');

# -- online, acking: the list empties, then a new one is made
my $a = IM::Client->new(port => port(9095), auto_pong => 1, auto_ack => 1);
is($a->login('u8003', 'pw'), 0, 'acking: recipient logs in');
ok(send_to(8003, 'acked'), 'acking: acked to the sender');
ok($a->expect(cmd => PUBLISH, text => 'acked'), 'acking: pushed and acked');
ok(wait_until(sub { !$redis->cmd(EXISTS => 'im:inbox:8003') }),
    'acking: the emptied list is gone');

$a->auto_ack(0);
ok(send_to(8003, 'kept'), 'acking: the next one, not acked, acked to the sender');
ok($a->expect(cmd => PUBLISH, text => 'kept'), 'acking: pushed');
$ttl = -3;
wait_until(sub { ($ttl = ttl(8003)) > 0 });
ok($ttl > 80 && $ttl <= 90, "acking: the new list got its TTL again ($ttl)");

$_->close(1000) for $a, $c, $s;
$t->done_testing();
