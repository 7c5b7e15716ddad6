#!/usr/bin/perl
# Errors (docs/PROTOCOL.md 6) over ws and wss. Refusals leave the session
# healthy: payload over im_max_payload (100 here) and PUBLISH to uid 0 get
# <<10, 3, MsgId>>, no ack, and a following publish works. Protocol
# violations (truncated message, trailing bytes, unknown command) get
# <<10, Cmd>> and a close. Another session is never affected.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport no_sessions_left/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
write_conf($t, redis => $redis, uc => $uc,
    main => "im_max_payload 100;\nim_close_grace 2s;");
$t->run();

my $base = 9000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);
    my $rid = $base + 1;

    # a bystander, logged in throughout
    my $by = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($by->login("u$rid", 'pw'), 0, "$name: bystander logs in");

    # -- refusals
    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login("s$base", 'pw'), 0, "$name: sender logs in");

    my $id = $s->publish($rid, 'x' x 101, raw => 1);
    my $m = $s->next;
    is($m && hexdump($m->{raw}), hexdump(invalid_packet(PUBLISH, $id)),
        "$name: payload 101 > im_max_payload 100 -> exactly <<10, 3, MsgId>>");
    $id = $s->publish($rid, 'y' x 100, raw => 1);
    $m = $s->next;
    is($m && hexdump($m->{raw}), hexdump(pub_ack($id)), "$name: payload of exactly 100 -> PUB_ACK");
    $m = $by->expect(cmd => PUBLISH);
    is($m && $m->{payload}, 'y' x 100, "$name: the refused one was not delivered, the 100-byte one was");

    $id = $s->publish(0, 'to the system');
    $m = $s->next;
    is($m && hexdump($m->{raw}), hexdump(invalid_packet(PUBLISH, $id)),
        "$name: PUBLISH to uid 0 -> exactly <<10, 3, MsgId>>");

    $id = $s->publish($rid, 'after the refusals');
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: the session stays: a following publish is acked");
    ok($by->expect(cmd => PUBLISH, msgid => $id), "$name: ... and delivered");
    ok(!$s->is_closed, "$name: the refused session is open");

    # -- violations: each on its own session, all at once
    my $mid = msgid();
    my @bad = (
        ['truncated payload', PUBLISH, publish_msg($rid, $mid, 'hello') . '', sub { substr($_[0], 0, -2) }],
        ['truncated MsgId', PUBLISH, pack('CN', PUBLISH, $rid) . substr($mid, 0, 20)],
        ['truncated ToUid', PUBLISH, pack('Cn', PUBLISH, 1)],
        ['PUBLISH, trailing bytes', PUBLISH, publish_msg($rid, $mid, 'hello') . 'XY'],
        ['PING, trailing byte', PING, ping_msg() . "\x00"],
        ['PING_RESP, trailing byte', PING_RESP, ping_resp_msg() . "\x01"],
        ['DISCONNECT, trailing byte', DISCONNECT, disconnect_msg() . "\x02"],
        ['truncated ack', PUB_ACK, pub_ack(substr($mid, 0, 31))],
        ['unknown cmd 99', 99, "\x63" . $mid],
        ['unknown cmd 0', 0, "\x00"],
        ['unknown cmd 200', 200, "\xc8\x00\x01"],
        ['CONNECT_ACK from a client', CONNECT_ACK, "\x02\x00"],
    );
    my @c;
    for my $i (0 .. $#bad) {
        my ($what, $cmd, $bytes, $fix) = @{$bad[$i]};
        $bytes = $fix->($bytes) if $fix;
        my $c = IM::Client->new(%o, auto_pong => 1);
        is($c->login('v' . ($base + 10 + $i), 'pw'), 0, "$name: $what: logs in");
        $c->send($bytes);
        push @c, $c;
    }
    for my $i (0 .. $#bad) {
        my ($what, $cmd) = @{$bad[$i]};
        my $c = $c[$i];
        my @got = grep { $_->{cmd} != PING } $c->drain(0.5);
        my $closed = $c->ws->wait_closed(3.5);
        push @got, grep { $_->{cmd} != PING } $c->drain(0.1);
        my $got = join ' | ', map { hexdump($_->{raw}) } @got;
        my $want = hexdump(invalid_packet($cmd));
        # <<10, Cmd, MsgId>> is allowed where the MsgId could be read
        ok($got eq $want || ($got =~ /^\Q$want\E 3[0-9a-f](?: [0-9a-f]{2}){31}$/),
            "$name: $what -> <<10, $cmd>>") or diag("got: $got");
        ok($closed, "$name: $what -> connection closed");
    }

    # the bystander and the refused sender are unaffected
    $id = $s->publish($rid, 'still here');
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: the sender still works");
    ok($by->expect(cmd => PUBLISH, msgid => $id), "$name: the bystander still receives");
    my @stray = grep { $_->{cmd} == INVALID_PACKET || $_->{cmd} == PUBLISH } $by->drain(0.3);
    is(scalar @stray, 0, "$name: the bystander got nothing from the bad sessions");
    # nothing of the truncated/trailing PUBLISHes was delivered
    ok(!grep({ ($_->{msgid} // '') eq $mid } @stray), "$name: no malformed PUBLISH delivered");
    $by->close(1000);
    $s->close(1000);
});

# every session ended: nothing leaked
{
    my ($ok, $st) = no_sessions_left(8);
    ok($ok, 'no session or user left in /status once every client is gone')
        or diag(explain($st));
}

$t->done_testing();
