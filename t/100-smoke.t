#!/usr/bin/perl
# Smoke: login, 1:1 over ws with acks, offline delivery after login.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf status/;

my $t = Test::Nginx->new()->has(qw/http/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => <<'U');
alice alice-secret 1001
bob bob-secret 1002
U

write_conf($t, redis => $redis, uc => $uc, stream => 0);
$t->run();

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret'), 0, 'alice logs in');
my $b = IM::Client->new(port => port(9095), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob logs in');
my $bad = IM::Client->new(port => port(9095));
is($bad->login('bob', 'nope'), 3, 'wrong password is code 3');

my $id = $a->publish(1002, 'hello');
ok($a->expect(cmd => PUB_ACK, msgid => $id), 'alice gets PUB_ACK');
my $m = $b->expect(cmd => PUBLISH);
ok($m && $m->{msgid} eq $id, 'bob gets the push with the same MsgId');
$b->ack($id);

# bob offline: his close done and the server down to one user (alice)
$b->ws->close(1000);
$b->ws->wait_closed;
wait_until(sub { (status()->{users} // -1) == 1 });
my $id2 = $a->publish(1002, 'while away');
ok($a->expect(cmd => PUB_ACK, msgid => $id2), 'acked while bob is offline');
my $b2 = IM::Client->new(port => port(9095), auto_pong => 1);
is($b2->login('bob', 'bob-secret'), 0, 'bob back');
$m = $b2->expect(cmd => PUBLISH);
ok($m && $m->{msgid} eq $id2, 'offline message delivered after login');

$t->done_testing();
