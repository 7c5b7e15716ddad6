#!/usr/bin/perl
# A full im_zone: new logins get CONNECT_ACK 2 and a clear error in the
# log; sessions already in are untouched; room made by leaving users is
# used again. Also the echo mode of the frame layer (im_websocket_echo).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::WS;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf status/;
use Test::Nginx qw/wait_until/;

my $t = Test::Nginx->new()->has(qw/http/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* pw uid-from-name\n");

# the echo mode on a server of its own
# (the zone, its smallest, holds about 500 uids: 32-byte entries)
write_conf($t, redis => $redis, uc => $uc, stream => 0,
    main => 'im_zone tiny 32k;', events => 'worker_connections 2048;',
    http => 'server { listen 127.0.0.1:%%PORT_9096%%; '
        . 'location /echo { im_websocket_echo; } }');
$t->run();

# fill the zone: one entry per uid
my (@in, $refused_at);
for my $i (1 .. 1500) {
    my $c = IM::Client->new(port => port(9095), auto_pong => 1);
    my $code = $c->login(10000 + $i, 'pw');
    if (!defined $code || $code != 0) {
        $refused_at = $i;
        is($code, 2, "zone full: login $i gets CONNECT_ACK 2");
        last;
    }
    push @in, $c;
}
ok($refused_at, 'the 32k zone filled up (after ' . scalar(@in) . ' uids)');
like($t->error_log, qr/im zone "tiny" is full: login of uid \d+ refused/,
    'a clear error in the log');

# those in are untouched: they still chat
my $id = $in[0]->publish(10002, 'still here');
ok($in[0]->expect(cmd => PUB_ACK, msgid => $id), 'a session in the zone still publishes');
ok($in[1]->expect(cmd => PUBLISH, msgid => $id), 'and another still receives');

# room again once some leave (and the server has seen them go: wait for
# the zone to list only those still in, within the harness bound)
$_->close(1000) for splice @in, 0, 20;
wait_until(sub { my $st = status();
    ($st->{node_users} // $st->{users} // 1e9) <= @in });
my $late = IM::Client->new(port => port(9095), auto_pong => 1);
is($late->login(19999, 'pw'), 0, 'a login after some left is accepted');
$late->close(1000);
$_->close(1000) for @in;

# echo mode: binary and text messages come back, bad UTF-8 is 1007
my $e = IM::WS->new(port => port(9096), path => '/echo');
ok($e->upgraded, 'echo: upgraded');
$e->send_binary("\x00\x01\xff");
is($e->recv_message(3), "\x00\x01\xff", 'echo: binary message returned');
$e->send_text('héllo');
is($e->recv_message(3), 'héllo', 'echo: text message returned');
$e->send_frame(opcode => 1, payload => "\xc3\x28");
ok($e->wait_closed(3), 'echo: invalid UTF-8 in a text message closes');
is($e->close_code, 1007, 'echo: with 1007');

$t->done_testing();
