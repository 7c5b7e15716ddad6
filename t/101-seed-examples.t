#!/usr/bin/perl
# The seed document's examples, byte for byte, over ws and wss (and the
# TCP API's): CONNECT test/123456/role 1 accepted; PUBLISH to 1234 with
# MsgId 550e8400e29b41d4a716446655440000 and payload "hello world"; the
# recipient's push is exactly <<3, MsgId, Len, Payload>>, the PUB_ACK
# exactly <<4, MsgId>>. The bytes are those of docs/vectors.json (the
# worked examples of docs/PROTOCOL.md 3.1, 3.3, 3.4 and 4).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => <<'U');
test 123456 1234
sender sender-secret 1001
U
# quiet re-push: "nothing else for the recipient" is checked after its ack,
# which a loaded machine may deliver later than the default 2 s re-push
write_conf($t, redis => $redis, uc => $uc, main => 'im_repush_interval 60s;');
$t->run();

my $ID = '550e8400e29b41d4a716446655440000';
my $CONNECT = vector('seed: CONNECT test / 123456, role 1')->{bytes};
my $PUBLISH = vector('seed: PUBLISH to uid 1234, hello world')->{bytes};
my $PUSH = vector("push of the seed's PUBLISH")->{bytes};
my $PUB_ACK = vector('seed: PUB_ACK')->{bytes};
my $CONNECT_ACK = vector('CONNECT_ACK 0, accepted')->{bytes};

# the harness's encoder agrees with the seed
is(connect_msg('test', '123456', role => 1), $CONNECT, 'connect_msg = seed bytes');
is(publish_msg(1234, $ID, 'hello world'), $PUBLISH, 'publish_msg = seed bytes');

for my $tr (transports()) {
    my ($name, %o) = @$tr;

    my $r = IM::Client->new(%o, auto_pong => 1);
    ok($r->upgraded, "$name: recipient upgraded");
    $r->send($CONNECT);
    my $m = $r->next;
    is($m && $m->{raw}, $CONNECT_ACK, "$name: CONNECT test/123456/role 1 -> exactly <<2,0>>");
    is($m && $m->{opcode}, 2, "$name: CONNECT_ACK is a binary message");

    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login('sender', 'sender-secret'), 0, "$name: sender logs in");
    $s->send($PUBLISH);

    $m = $s->next;
    is($m && $m->{raw}, $PUB_ACK, "$name: PUB_ACK is exactly <<4, MsgId>>");
    is($m && $m->{opcode}, 2, "$name: PUB_ACK is a binary message");

    $m = $r->next;
    is($m && $m->{raw}, $PUSH, "$name: push is exactly <<3, MsgId, 0x000b, hello world>>");
    is($m && $m->{opcode}, 2, "$name: push is a binary message");
    $r->send($PUB_ACK);    # the client's ack is the same <<4, MsgId>>
    ok($r->nothing_for(0.5), "$name: nothing else for the recipient");
    ok($s->nothing_for(0.1), "$name: nothing else for the sender");
    $r->close(1000);
    $s->close(1000);
    $r->wait_closed(2);
    $s->wait_closed(2);
}

# the TCP API example: the same PUBLISH framed, the same PUB_ACK framed
{
    my $r = IM::Client->new(transports_ws(), auto_pong => 1);
    is($r->login('test', '123456', role => 1), 0, 'tcp: recipient logs in');
    my $c = IM::TCP->new(port => port(19095));
    $c->send_raw(
        vector('seed: PUBLISH to uid 1234, hello world')->{bytes_tcp});
    my $a = $c->recv_msg;
    is($a, $PUB_ACK, 'tcp: answer is exactly [00 00 00 21]<<4, MsgId>>');
    my $m = $r->next;
    is($m && $m->{raw}, $PUSH, 'tcp: push is exactly <<3, MsgId, Len, Payload>>');
    $r->ack($ID);
}

sub transports_ws { my ($tr) = transports(); my (undef, %o) = @$tr; %o }

$t->done_testing();
