#!/usr/bin/perl
# Delivery receipts (im_receipts on): when a recipient acks a push, the
# sender's live sessions in locations with receipts on get
# RECEIPT <<13, MsgId, Uid>>; live, stored and read back, across nodes;
# a location without it (the default, for the field's client) gets none.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Client;
use IM::Redis;
use IM::UserCentre;
use IM::Proto qw/:all/;
use IM::Setup qw/standard ssl_opts/;
use IM::Cluster ();

my ($t, $redis, $uc) = standard(stream => 0, ws => 'im_receipts on;',
    locations => 'location = /plain { im_websocket; im_auth /_auth; }',
    main => "im_repush_interval 60s;\nim_ping_interval 300s;");

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret', client_id => 1), 0, 'alice on /ws');
my $plain = IM::Client->new(port => port(9095), path => '/plain',
    auto_pong => 1);
is($plain->login('alice', 'alice-secret', client_id => 2), 0,
    'alice also on /plain (no receipts)');
my $b = IM::Client->new(port => port(8443), path => '/wss', ssl => 1,
    ssl_opts => ssl_opts(), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob on /wss');

# live: the receipt comes after bob's ack, not before
my $id = $a->publish(1002, 'hello');
ok($a->expect(cmd => PUB_ACK, msgid => $id), 'alice: PUB_ACK');
my $m = $b->expect(cmd => PUBLISH, msgid => $id);
ok($m, 'bob gets the push');
ok(!grep({ $_->{cmd} == RECEIPT } $a->drain(0.5)),
    'no receipt while bob has not acked');
$b->ack($id);
my $r = $a->expect(cmd => RECEIPT, msgid => $id);
ok($r, 'alice gets a RECEIPT once bob acked');
is($r && $r->{uid}, 1002, '... naming bob');
is(length($r->{raw} // ''), 37, '... <<13, MsgId:32, Uid:32>>: 37 bytes');
ok(!grep({ $_->{cmd} == RECEIPT } $plain->drain(1)),
    'the /plain session of alice gets none');

# stored: bob offline, the message read back from the inbox still knows
# its sender
$b->close(1000);
$b->wait_closed;
my $id2 = $a->publish(1002, 'while away');
ok($a->expect(cmd => PUB_ACK, msgid => $id2), 'accepted while bob is away');
my $stored = $redis->cmd(LRANGE => 'im:inbox:1002', 0, -1);
ok(@$stored && ord($stored->[-1]) == 2,
    'stored in the form that names the sender (version 2)');
ok(!grep({ $_->{cmd} == RECEIPT } $a->drain(0.5)), 'no receipt yet');
my $b2 = IM::Client->new(port => port(9095), auto_pong => 1);
is($b2->login('bob', 'bob-secret'), 0, 'bob back');
ok($b2->expect(cmd => PUBLISH, msgid => $id2), 'the stored message');
$b2->ack($id2);
$r = $a->expect(cmd => RECEIPT, msgid => $id2);
is($r && $r->{uid}, 1002, 'its receipt reaches alice after the late ack');

like(http_get('/metrics', port => port(9095)) // '',
    qr/^im_receipts_total 2$/m, 'receipts are counted');

# across nodes: alice on node a, bob on node b, one Redis
my $uc2 = IM::UserCentre->new(t => $t, users => "u3001 pw 3001\nu3002 pw 3002\n");
my @n = map {
    IM::Cluster::node(name => $_->[0], port => $_->[1], redis => $redis,
        uc => $uc2, workers => 2, ws => 'im_receipts on;',
        timers => { im_ping_interval => '300s' })->run()
} (['a', 9101], ['b', 9102]);
my ($x) = IM::Cluster::login($n[0], 3001, auto_ack => 0);
my ($y) = IM::Cluster::login($n[1], 3002, auto_ack => 0);
ok($x && $y, 'u3001 on node a, u3002 on node b');
my $id3 = $x->publish(3002, 'across');
ok($x->expect(cmd => PUB_ACK, msgid => $id3), 'accepted on node a');
ok($y->expect(cmd => PUBLISH, msgid => $id3), 'pushed on node b');
$y->ack($id3);
$r = $x->expect(cmd => RECEIPT, msgid => $id3);
is($r && $r->{uid}, 3002, 'the receipt crosses back to node a');

$t->done_testing();
