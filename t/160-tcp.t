#!/usr/bin/perl
# TCP backend API (docs/PROTOCOL.md §4, §6; issue 6): [Len:32] framing both
# ways. PUBLISH to an online user (pushed; [Len]<<4, MsgId>>) and to an offline
# one (delivered at login); GROUP_PUBLISH and GROUP_PART_PUBLISH as uid 0 (no
# membership needed); 1,000 pipelined requests of mixed kinds answered 1,000
# times in request order; requests split into one-byte writes; refusals
# (payload over im_max_payload, PUBLISH to uid 0, empty part-group result,
# group without members) answered <<10, Cmd, MsgId>> with the connection kept;
# malformed input (truncated, trailing bytes, unknown cmd, CONNECT, acks, empty
# frame) answered [Len]<<10, Cmd>> then closed, after the answers to earlier
# pipelined requests; a length over im_max_message closed without a response;
# im_tcp_timeout 2s closes an idle connection.
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
use Time::HiRes qw/time sleep/;

my $t = Test::Nginx->new()->has(qw/http stream redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

my $MAXMSG = 8192;

$t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 1;
im_redis ${\ $redis->addr};
im_max_payload 1000;
im_max_message $MAXMSG;
# quiet re-push: the WebSocket users read hundreds of pushes in sequence and
# check "once" / "nothing more"; a re-push of an ack a loaded machine
# delivered late would be a second copy
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
        im_tcp;
        im_tcp_timeout 2s;
    }
}
EOF
$t->run();

my $GID = 500;
$redis->select_cmd(1, 'SADD', "im_group:$GID", 1001, 1002);

sub user {
    my ($uid) = @_;
    my $c = IM::Client->new(port => port(9095), auto_pong => 1, uid => $uid);
    is($c->login("u$uid", 'pw'), 0, "u$uid logs in");
    return $c;
}

sub tcp { IM::TCP->new(port => port($_[0] // 19095)) }

sub payload {
    my ($to, $text) = @_;
    return '{"from":0,"to":' . $to . ',"content":{"type":"text","text":"'
        . $text . '"}}';
}

sub hex_of { defined $_[0] ? hexdump($_[0]) : 'undef' }

# the raw next framed answer: [Len:32] and the message, as bytes
sub raw_answer {
    my ($c, $timeout) = @_;
    my $m = $c->recv_msg($timeout);
    return defined $m ? tcp_frame($m) : undef;
}

my $u1 = user(1001);

###############################################################################
# PUBLISH to an online user

my $c = tcp();
my $p = payload(1001, 'hi');
my $id = msgid();
$c->send_msg(publish_msg(1001, $id, $p));
is(hex_of(raw_answer($c)), hexdump(pack('N', 33) . pub_ack($id)),
    'online: answer is [00 00 00 21]<<4, MsgId>>');
my $m = $u1->next;
is(hex_of($m && $m->{raw}), hexdump(push_msg($id, $p)),
    'online: pushed as <<3, MsgId, Len, Payload>>');
$u1->ack($id) if $m;

# PUBLISH to an offline user, delivered at login
my $p2 = payload(1002, 'later');
my $id2 = msgid();
$m = $c->request(publish_msg(1002, $id2, $p2));
is(hex_of($m && $m->{raw}), hexdump(pub_ack($id2)), 'offline: answered <<4, MsgId>>');
my $u2 = user(1002);
$m = $u2->next;
is(hex_of($m && $m->{raw}), hexdump(push_msg($id2, $p2)), 'offline: pushed after login');
$u2->ack($id2) if $m;

###############################################################################
# groups as uid 0

my $p3 = payload($GID, 'group');
my $id3 = msgid();
$m = $c->request(group_publish_msg($GID, $id3, $p3));
is(hex_of($m && $m->{raw}), hexdump(group_pub_ack($id3)),
    'GROUP_PUBLISH as uid 0 (not a member): <<6, MsgId>>');
for my $u ($u1, $u2) {
    $m = $u->next;
    is(hex_of($m && $m->{raw}), hexdump(group_push_msg($GID, $id3, $p3)),
        $u->uid . ' gets <<5, Gid, MsgId, Len, Payload>>');
    $u->ack($id3, cmd => GROUP_PUB_ACK) if $m;
}

my @list = (1002, 9999, 1002);
my $id4 = msgid();
$m = $c->request(part_publish_msg($GID, $id4, \@list, $p3));
is(hex_of($m && $m->{raw}), hexdump(part_pub_ack($id4)),
    'GROUP_PART_PUBLISH as uid 0: <<12, MsgId>>');
$m = $u2->next;
is(hex_of($m && $m->{raw}), hexdump(part_push_msg($GID, $id4, \@list, $p3)),
    '1002 gets <<11, Gid, MsgId, N, Uids as sent, Len, Payload>>');
$u2->ack($id4, cmd => GROUP_PART_PUB_ACK) if $m;
ok($u2->nothing_for(0.5), '... once');
ok($u1->nothing_for(0.1), '1001, not listed, gets nothing');

###############################################################################
# refusals: <<10, Cmd, MsgId>>, the connection stays

my $rid = msgid();
$m = $c->request(publish_msg(1001, $rid, 'x' x 1001));
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(PUBLISH, $rid)),
    'payload over im_max_payload: <<10, 3, MsgId>>');
$rid = msgid();
$m = $c->request(publish_msg(0, $rid, payload(0, 'to system')));
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(PUBLISH, $rid)),
    'PUBLISH to uid 0: <<10, 3, MsgId>>');
$rid = msgid();
$m = $c->request(part_publish_msg($GID, $rid, [9999, 8888], $p3));
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PART_PUBLISH, $rid)),
    'part-group with no member listed: <<10, 11, MsgId>>');
$rid = msgid();
$m = $c->request(part_publish_msg($GID, $rid, [], $p3));
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PART_PUBLISH, $rid)),
    'part-group with N = 0: <<10, 11, MsgId>>');
$rid = msgid();
$m = $c->request(group_publish_msg(999, $rid, $p3));
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $rid)),
    'group without members: <<10, 5, MsgId>>');
$rid = msgid();
$m = $c->request(group_publish_msg($GID, $rid, 'y' x 1001));
is(hex_of($m && $m->{raw}), hexdump(invalid_packet(GROUP_PUBLISH, $rid)),
    'group payload over im_max_payload: <<10, 5, MsgId>>');
$rid = msgid();
$m = $c->request(publish_msg(1003, $rid, 'x' x 1000));
is(hex_of($m && $m->{raw}), hexdump(pub_ack($rid)),
    'payload of exactly im_max_payload: accepted');
ok(!$c->is_closed, 'connection still open after the refusals');
$id = msgid();
$m = $c->request(publish_msg(1001, $id, $p));
ok($m && $m->{cmd} == PUB_ACK && $m->{msgid} eq $id, '... and still serves requests');
$m = $u1->expect(msgid => $id);
$u1->ack($id) if $m;
ok($u1->nothing_for(0.3) && $u2->nothing_for(0.1), 'refused messages were not delivered');

###############################################################################
# 1,000 pipelined requests of mixed kinds: 1,000 answers in order

{
    my (@want, @to1001, @kind);
    my $bytes = '';
    for my $i (1 .. 1000) {
        my $id = msgid();
        my $k = $i % 5;
        my ($msg, $ans);
        if ($k == 0) {
            $msg = publish_msg(1001, $id, payload(1001, "p$i"));    # online
            $ans = pub_ack($id);
            push @to1001, $id;
            push @kind, [$id, '1:1'];
        } elsif ($k == 1) {
            $msg = publish_msg(1003, $id, payload(1003, "p$i"));    # offline
            $ans = pub_ack($id);
        } elsif ($k == 2) {
            $msg = group_publish_msg($GID, $id, payload($GID, "g$i"));
            $ans = group_pub_ack($id);
            push @to1001, $id;
            push @kind, [$id, 'group'];
        } elsif ($k == 3) {
            $msg = part_publish_msg($GID, $id, [1001], payload($GID, "pp$i"));
            $ans = part_pub_ack($id);
            push @to1001, $id;
            push @kind, [$id, 'group'];
        } else {
            $msg = publish_msg(0, $id, payload(0, "r$i"));          # refused
            $ans = invalid_packet(PUBLISH, $id);
        }
        $bytes .= tcp_frame($msg);
        push @want, $ans;
    }
    $u1->auto_ack(1);
    $u2->auto_ack(1);
    my $p = tcp();
    my $t0 = time;
    ok($p->send_raw($bytes), '1,000 requests written at once (' . length($bytes) . ' bytes)');
    my @got;
    while (@got < 1000) {
        my $a = $p->recv_msg(10);
        last unless defined $a;
        push @got, $a;
    }
    is(scalar @got, 1000, sprintf '1,000 answers (%.2fs)', time - $t0);
    my ($first_bad) = grep { ($got[$_] // '') ne $want[$_] } 0 .. 999;
    ok(!defined $first_bad, 'answers in request order, each with its MsgId')
        or diag("answer $first_bad: " . hex_of($got[$first_bad])
            . "\nwanted:  " . hexdump($want[$first_bad]));
    ok(!defined $p->recv_msg(0.3), 'no extra answer');

    # 1001 gets its 600 pushes in the order accepted
    my (@seen, %seen);
    my $deadline = time + 20;
    while (keys %seen < @to1001 && time < $deadline) {
        my $m = $u1->next(timeout => 5) or last;
        next unless defined $m->{msgid};
        push @seen, $m->{msgid} unless $seen{$m->{msgid}}++;
    }
    is(scalar @seen, scalar @to1001, '1001 got all ' . scalar(@to1001) . ' of its pushes');
    my %kind = map { $_->[0] => $_->[1] } @kind;
    for my $k ('1:1', 'group') {
        my @w = grep { $kind{$_} eq $k } @to1001;
        my @g = grep { $kind{$_} eq $k } @seen;
        is_deeply(\@g, \@w, "... the $k pushes among themselves in request order");
    }
    {
        my ($diff) = grep { $seen[$_] ne $to1001[$_] } 0 .. $#to1001;
        ok(!defined $diff, '... all of them in the order accepted (answered)')
            or diag("first difference at push $diff: got a $kind{$seen[$diff]} push, "
                . "wanted a $kind{$to1001[$diff]} one");
    }
    $u2->drain(0.5);
    $u1->drain(0.5);
    $u1->auto_ack(0);
    $u2->auto_ack(0);
    $p->close;
}

###############################################################################
# one-byte writes

{
    my $s = tcp();
    my $id = msgid();
    my $id2 = msgid();
    my $bytes = tcp_frame(publish_msg(1001, $id, payload(1001, 'bytewise')))
        . tcp_frame(group_publish_msg($GID, $id2, payload($GID, 'bytewise')));
    my $ok = 1;
    for my $b (split //, $bytes) {
        $ok &&= $s->send_raw($b);
        sleep 0.002;
    }
    ok($ok, 'two requests written one byte at a time (' . length($bytes) . ' writes)');
    my $a1 = $s->recv_msg;
    my $a2 = $s->recv_msg;
    is(hex_of($a1), hexdump(pub_ack($id)), 'first answered <<4, MsgId>>');
    is(hex_of($a2), hexdump(group_pub_ack($id2)), 'second answered <<6, MsgId>>');
    $m = $u1->expect(msgid => $id);
    ok($m, 'and delivered');
    $u1->ack($id);
    $m = $u1->expect(msgid => $id2);
    $u1->ack($id2, cmd => GROUP_PUB_ACK);
    $m = $u2->expect(msgid => $id2);
    $u2->ack($id2, cmd => GROUP_PUB_ACK);

    # length header split 1+3, body in two pieces across requests
    my $id3 = msgid();
    my $f = tcp_frame(publish_msg(1001, $id3, payload(1001, 'split')));
    $s->send_raw(substr($f, 0, 1));
    sleep 0.05;
    $s->send_raw(substr($f, 1, 10));
    sleep 0.05;
    $s->send_raw(substr($f, 11));
    is(hex_of($s->recv_msg), hexdump(pub_ack($id3)), 'header split 1+3, body split: answered');
    $u1->expect(msgid => $id3) && $u1->ack($id3);
}

###############################################################################
# half-close: requests, then the client shuts its sending side (as
# `printf ... | nc` does): every request still answered, then closed

{
    my $s = tcp();
    my @ids = map { msgid() } 1 .. 3;
    $s->send_raw(tcp_frame(publish_msg(1001, $ids[0], payload(1001, 'hc')))
        . tcp_frame(group_publish_msg($GID, $ids[1], payload($GID, 'hc')))
        . tcp_frame(publish_msg(1003, $ids[2], payload(1003, 'hc'))));
    shutdown($s->conn->sock, 1);
    my @a;
    while (@a < 3) {
        my $a = $s->recv_msg(3);
        last unless defined $a;
        push @a, $a;
    }
    {
        is(join(' | ', map { hex_of($_) } @a),
            join(' | ', map { hexdump($_) } pub_ack($ids[0]), group_pub_ack($ids[1]),
                pub_ack($ids[2])),
            'half-closed after 3 requests: 3 answers');
    }
    ok($s->wait_closed(3), '... then the server closes');
    for my $i (@ids[0, 1]) {
        $m = $u1->expect(msgid => $i);
        ok($m, 'half-close: message ' . ($i eq $ids[0] ? '1:1' : 'group') . ' delivered');
        $u1->ack($i, cmd => $m ? $IM::Proto::ACK_FOR{$m->{cmd}} : PUB_ACK);
    }
    $m = $u2->expect(msgid => $ids[1]);
    $u2->ack($ids[1], cmd => GROUP_PUB_ACK) if $m;
}

###############################################################################
# malformed input: [Len]<<10, Cmd>>, then close

my $okmsg = publish_msg(1001, msgid(), payload(1001, 'ok'));
my @bad = (
    ['truncated payload (Len past the end)', PUBLISH,
        substr($okmsg, 0, -3)],
    ['truncated MsgId', PUBLISH, pack('CN', PUBLISH, 1001) . ('a' x 20)],
    ['truncated part-group uid list', GROUP_PART_PUBLISH,
        pack('CN', GROUP_PART_PUBLISH, $GID) . msgid() . pack('nN', 3, 1001)],
    ['trailing bytes after PUBLISH', PUBLISH, $okmsg . 'x'],
    ['trailing bytes after GROUP_PUBLISH', GROUP_PUBLISH,
        group_publish_msg($GID, msgid(), 'x') . "\0"],
    ['unknown command 0x63', 0x63, pack('C', 0x63) . msgid()],
    ['unknown command 0', 0, "\0"],
    ['CONNECT', CONNECT, connect_msg('u1001', 'pw')],
    ['PUB_ACK', PUB_ACK, pub_ack(msgid())],
    ['GROUP_PUB_ACK', GROUP_PUB_ACK, group_pub_ack(msgid())],
    ['GROUP_PART_PUB_ACK', GROUP_PART_PUB_ACK, part_pub_ack(msgid())],
    ['PING_RESP', PING_RESP, ping_resp_msg()],
    ['LOGOUT', LOGOUT, logout_msg()],
    ['CONNECT_ACK', CONNECT_ACK, connect_ack(0)],
);
for my $b (@bad) {
    my ($name, $cmd, $bytes) = @$b;
    my $s = tcp();
    $s->send_msg($bytes);
    my $a = raw_answer($s, 3);
    is(hex_of($a), hexdump(tcp_frame(invalid_packet($cmd))),
        "$name: [00 00 00 02]<<10, $cmd>>");
    ok($s->wait_closed(3), "$name: then closed");
}
ok($u1->nothing_for(0.3), 'nothing of the malformed input was delivered');

# an empty frame: no command at all
{
    my $s = tcp();
    $s->send_raw(pack('N', 0));
    my $a = $s->recv_msg(3);
    ok(!defined $a || $a eq invalid_packet(0),
        'empty frame: nothing or <<10, 0>> (' . hex_of($a) . ')');
    ok($s->wait_closed(3), 'empty frame: closed');
}

# a violation behind pipelined requests: their answers come first, in order
{
    my $s = tcp();
    my ($i1, $i2, $i3) = (msgid(), msgid(), msgid());
    $s->send_raw(tcp_frame(group_publish_msg($GID, $i1, payload($GID, 'before')))
        . tcp_frame(publish_msg(1003, $i2, payload(1003, 'before')))
        . tcp_frame(part_publish_msg($GID, $i3, [1002], payload($GID, 'before')))
        . tcp_frame(pack('C', 0x63)));
    my @a;
    while (@a < 4) {
        my $a = $s->recv_msg(3);
        last unless defined $a;
        push @a, $a;
    }
    {
        is(join(' | ', map { hex_of($_) } @a),
            join(' | ', map { hexdump($_) } group_pub_ack($i1), pub_ack($i2),
                part_pub_ack($i3), invalid_packet(0x63)),
            'GROUP_PUBLISH, PUBLISH, GROUP_PART_PUBLISH, then garbage: three acks, then <<10, 0x63>>');
    }
    ok($s->wait_closed(3), '... then closed');
    for my $u ($u1, $u2) {
        $m = $u->expect(msgid => $i1);
        ok($m, $u->uid . ': the acked group message was delivered');
        $u->ack($i1, cmd => GROUP_PUB_ACK) if $m;
    }
    $m = $u2->expect(msgid => $i3);
    ok($m, '1002: the acked part-group message was delivered');
    $u2->ack($i3, cmd => GROUP_PART_PUB_ACK) if $m;
}

###############################################################################
# lengths over im_max_message: closed, no response

{
    my $s = tcp();
    $s->send_raw(pack('N', $MAXMSG + 1));
    ok($s->wait_closed(3), 'length im_max_message + 1 (header alone): closed');
    is($s->conn->{rbuf}, '', '... without a response');

    $s = tcp();
    $s->send_raw(pack('N', $MAXMSG + 1) . publish_msg(1001, msgid(), 'z' x ($MAXMSG - 38)));
    my $a = $s->recv_msg(3);
    ok(!defined $a && $s->is_closed, 'length im_max_message + 1 with its body: closed without a response')
        or diag('got ' . hex_of($a));

    $s = tcp();
    $s->send_raw(pack('N', 0xffffffff) . 'abc');
    ok($s->wait_closed(3), 'length 0xffffffff: closed');
    is($s->conn->{rbuf}, '', '... without a response');

    # a valid request first, then an oversized one: its answer, then close
    $s = tcp();
    my $i = msgid();
    $s->send_raw(tcp_frame(publish_msg(1001, $i, payload(1001, 'first')))
        . pack('N', 1 << 24));
    {
        is(hex_of($s->recv_msg(3)), hexdump(pub_ack($i)),
            'valid request before an oversized one answered');
    }
    ok($s->wait_closed(3), '... then closed');
    $m = $u1->expect(msgid => $i);
    ok($m, '... and its message delivered');
    $u1->ack($i) if $m;

    # exactly im_max_message is not over the limit: parsed (and refused as malformed)
    $s = tcp();
    my $body = publish_msg(1001, msgid(), 'q' x 100);
    $body .= "\0" x ($MAXMSG - length $body);
    $s->send_msg($body);
    is(hex_of(raw_answer($s, 3)), hexdump(tcp_frame(invalid_packet(PUBLISH))),
        'length exactly im_max_message is read (then trailing bytes: <<10, 3>>)');
    ok($s->wait_closed(3), '... then closed');
}

###############################################################################
# im_tcp_timeout 2s: every wait below is "not sooner than 2 s" from a time
# taken before what started the server's timer, and bounded by the harness

{
    my $s = tcp(19096);
    my ($ok, $sent) = (1, time);
    for (1 .. 3) {
        sleep 1;
        my $i = msgid();
        $sent = time;
        my $a = $s->request(publish_msg(1003, $i, payload(1003, 'keepalive')));
        $ok &&= $a && $a->{cmd} == PUB_ACK && $a->{msgid} eq $i;
    }
    ok($ok, 'a connection in use outlives im_tcp_timeout (3 requests 1s apart)');
    ok($s->wait_closed(2 + $Test::Nginx::TIMEOUT), 'idle: closed');
    my $dt = time - $sent;
    ok($dt > 1.7, sprintf 'after 2s idle, not sooner (%.2fs)', $dt);
    is($s->conn->{rbuf}, '', '... without sending anything');

    my $t0 = time;
    my $idle = tcp(19096);
    my $def = tcp();
    ok($idle->wait_closed(2 + $Test::Nginx::TIMEOUT), 'a connection that never sends: closed');
    $dt = time - $t0;
    ok($dt > 1.7, sprintf 'after 2s, not sooner (%.2fs)', $dt);

    # idle as long as that one, and longer by now
    ok(!$def->wait_closed(0.5), 'the server without im_tcp_timeout keeps it');
}

$u1->close(1000);
$u2->close(1000);
$u1->wait_closed(2);
$u2->wait_closed(2);

$t->done_testing();
