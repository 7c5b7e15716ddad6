#!/usr/bin/perl
# TCP backend API: access rules and TLS (docs/PROTOCOL.md §4; issue 6 item 3).
# A stream server that denies the client's address closes the connection
# without a response and delivers nothing; "allow 127.0.0.1; deny all;"
# serves; stream ssl (self-signed certificate): PUBLISH online and offline,
# group and part-group, pipelined requests in order, one-byte writes,
# a refusal keeps the connection, a malformed message gets <<10, Cmd>> and a
# close, a length over im_max_message closes, the idle timeout closes.
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
use IM::Setup qw/make_cert/;
use Time::HiRes qw/time sleep/;

my $t = Test::Nginx->new()->has(qw/http stream stream_ssl redis openssl socket_ssl/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
make_cert($t);
my $d = $t->testdir;

$t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 1;
im_redis ${\ $redis->addr};
im_max_payload 1000;
im_max_message 4096;
# quiet re-push: the WebSocket users read 200 pipelined requests' pushes in
# sequence; a re-push of an ack a loaded machine delivered late would come
# into the checks after them
im_repush_interval 60s;
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_9095%%;
        location /ws { im_websocket; im_auth /_auth; }
        ${\ $uc->auth_location }
    }
}
stream {
    %%TEST_GLOBALS_STREAM%%
    server {
        listen 127.0.0.1:%%PORT_19095%%;
        allow 127.0.0.1;
        deny all;
        im_tcp;
    }
    server {
        listen 127.0.0.1:%%PORT_19096%%;
        deny 127.0.0.1;
        allow all;
        im_tcp;
    }
    server {
        listen 127.0.0.1:%%PORT_19097%%;
        allow 127.0.0.2;
        deny all;
        im_tcp;
    }
    server {
        listen 127.0.0.1:%%PORT_19443%% ssl;
        ssl_certificate     $d/im.crt;
        ssl_certificate_key $d/im.key;
        allow 127.0.0.1;
        deny all;
        im_tcp;
    }
    server {
        listen 127.0.0.1:%%PORT_19444%% ssl;
        ssl_certificate     $d/im.crt;
        ssl_certificate_key $d/im.key;
        im_tcp;
        im_tcp_timeout 1s;
    }
}
EOF
$t->run();

my $GID = 600;
$redis->select_cmd(1, 'SADD', "im_group:$GID", 1001, 1002);

sub payload {
    my ($to, $text) = @_;
    return '{"from":0,"to":' . $to . ',"content":{"type":"text","text":"'
        . $text . '"}}';
}
sub hex_of { defined $_[0] ? hexdump($_[0]) : 'undef' }

my $u1 = IM::Client->new(port => port(9095), auto_pong => 1, uid => 1001);
is($u1->login('u1001', 'pw'), 0, 'u1001 logs in');

###############################################################################
# access

for my $srv ([19096, 'deny 127.0.0.1'], [19097, 'allow 127.0.0.2; deny all']) {
    my ($port, $rule) = @$srv;
    my $c = IM::TCP->new(port => port($port));
    my $id = msgid();
    $c->send_msg(publish_msg(1001, $id, payload(1001, 'denied')));
    ok($c->wait_closed(3), "$rule: connection closed");
    is($c->conn->{rbuf}, '', "$rule: without a response");
    ok($u1->nothing_for(0.3), "$rule: nothing delivered");
}
like($t->error_log, qr/access forbidden by rule/, 'error.log: access forbidden by rule');

{
    my $c = IM::TCP->new(port => port(19095));
    my $id = msgid();
    my $m = $c->request(publish_msg(1001, $id, payload(1001, 'allowed')));
    is(hex_of($m && $m->{raw}), hexdump(pub_ack($id)), 'allow 127.0.0.1: served');
    $m = $u1->expect(msgid => $id);
    ok($m, '... and delivered');
    $u1->ack($id) if $m;
}

###############################################################################
# TLS

sub tls { IM::TCP->new(port => port($_[0] // 19443), ssl => 1) }

my $s = eval { tls() };
ok($s, 'TLS handshake with the stream ssl server') or diag($@);
SKIP: {
skip 'no TLS connection', 1 unless $s;

# online
my $p = payload(1001, 'over tls');
my $id = msgid();
$s->send_msg(publish_msg(1001, $id, $p));
my $a = $s->recv_msg;
is(hex_of(defined $a ? tcp_frame($a) : undef), hexdump(tcp_frame(pub_ack($id))),
    'TLS: PUBLISH online answered [00 00 00 21]<<4, MsgId>>');
my $m = $u1->next;
is(hex_of($m && $m->{raw}), hexdump(push_msg($id, $p)), 'TLS: pushed');
$u1->ack($id) if $m;

# offline, delivered at login
my $id2 = msgid();
my $p2 = payload(1002, 'tls offline');
$m = $s->request(publish_msg(1002, $id2, $p2));
is(hex_of($m && $m->{raw}), hexdump(pub_ack($id2)), 'TLS: PUBLISH offline answered');
my $u2 = IM::Client->new(port => port(9095), auto_pong => 1, uid => 1002);
is($u2->login('u1002', 'pw'), 0, 'u1002 logs in');
$m = $u2->next;
is(hex_of($m && $m->{raw}), hexdump(push_msg($id2, $p2)), 'TLS: delivered at login');
$u2->ack($id2) if $m;

# group and part-group as uid 0
my $id3 = msgid();
$m = $s->request(group_publish_msg($GID, $id3, $p));
is(hex_of($m && $m->{raw}), hexdump(group_pub_ack($id3)), 'TLS: GROUP_PUBLISH answered <<6, MsgId>>');
for my $u ($u1, $u2) {
    $m = $u->expect(msgid => $id3);
    is(hex_of($m && $m->{raw}), hexdump(group_push_msg($GID, $id3, $p)),
        'TLS: ' . $u->uid . ' gets the group push');
    $u->ack($id3, cmd => GROUP_PUB_ACK) if $m;
}
my $id4 = msgid();
$m = $s->request(part_publish_msg($GID, $id4, [1002, 7], $p));
is(hex_of($m && $m->{raw}), hexdump(part_pub_ack($id4)), 'TLS: GROUP_PART_PUBLISH answered <<12, MsgId>>');
$m = $u2->expect(msgid => $id4);
is(hex_of($m && $m->{raw}), hexdump(part_push_msg($GID, $id4, [1002, 7], $p)),
    'TLS: 1002 gets the part-group push');
$u2->ack($id4, cmd => GROUP_PART_PUB_ACK) if $m;

# pipelined, in order
my (@want, $bytes);
for my $i (1 .. 200) {
    my $id = msgid();
    if ($i % 2) {
        $bytes .= tcp_frame(publish_msg(1003, $id, payload(1003, "t$i")));
        push @want, pub_ack($id);
    } else {
        $bytes .= tcp_frame(group_publish_msg($GID, $id, payload($GID, "t$i")));
        push @want, group_pub_ack($id);
    }
}
$u1->auto_ack(1);
$u2->auto_ack(1);
$s->send_raw($bytes);
my @got;
while (@got < 200) {
    my $a = $s->recv_msg(10);
    last unless defined $a;
    push @got, $a;
}
is(scalar @got, 200, 'TLS: 200 pipelined requests, 200 answers');
ok(!grep({ ($got[$_] // '') ne $want[$_] } 0 .. 199), 'TLS: in request order');
$u1->drain(1);
$u2->drain(0.5);
$u1->auto_ack(0);
$u2->auto_ack(0);

# one-byte writes
my $id5 = msgid();
my $ok = 1;
for my $b (split //, tcp_frame(publish_msg(1001, $id5, payload(1001, 'tls bytes')))) {
    $ok &&= $s->send_raw($b);
}
ok($ok, 'TLS: request written one byte (one TLS record) at a time');
$m = $s->recv_decoded;
ok($m && $m->{cmd} == PUB_ACK && $m->{msgid} eq $id5, 'TLS: answered');
$u1->expect(msgid => $id5) && $u1->ack($id5);

# refusal keeps the connection
my $id6 = msgid();
$m = $s->request(publish_msg(0, $id6, 'x'));
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(PUBLISH, $id6)),
    'TLS: PUBLISH to uid 0 refused <<10, 3, MsgId>>');
my $id7 = msgid();
$m = $s->request(publish_msg(1001, $id7, 'x' x 1001));
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(PUBLISH, $id7)),
    'TLS: payload over im_max_payload refused <<10, 3, MsgId>>');
my $id8 = msgid();
$m = $s->request(publish_msg(1001, $id8, payload(1001, 'still')));
ok($m && $m->{cmd} == PUB_ACK, 'TLS: connection kept after refusals');
$u1->expect(msgid => $id8) && $u1->ack($id8);

# malformed: <<10, Cmd>> then close
$s->send_msg(pub_ack(msgid()));
$a = $s->recv_msg(3);
is(hex_of($a), hexdump(invalid_packet(PUB_ACK)), 'TLS: an ack is answered <<10, 4>>');
ok($s->wait_closed(3), 'TLS: then closed');

# oversized length: closed without a response
my $s2 = tls();
$s2->send_raw(pack('N', 4097));
ok($s2->wait_closed(3), 'TLS: length over im_max_message: closed');
is($s2->conn->{rbuf}, '', 'TLS: without a response');

# idle timeout (a server with im_tcp_timeout 1s)
# ($t0 before connecting: the server's timer starts after it; how late the
# close comes is the machine's business, the wait is bounded)
my $t0 = time;
my $s3 = tls(19444);
ok($s3->wait_closed(1 + $Test::Nginx::TIMEOUT), 'TLS: idle connection closed');
my $dt = time - $t0;
ok($dt > 0.8, sprintf 'TLS: after 1s, not sooner (%.2fs)', $dt);

$u2->close(1000);
$u2->wait_closed(2);
}

$u1->close(1000);
$u1->wait_closed(2);

$t->done_testing();
