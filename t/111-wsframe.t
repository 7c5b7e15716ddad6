#!/usr/bin/perl
# The WebSocket layer (RFC 6455, docs/PROTOCOL.md 2) of a logged-in session, ws
# and wss: text frame -> close 1003; unmasked frame, RSV bits, unknown
# opcode, stray continuation, fragmented or long control frame -> 1002;
# message over im_max_message (4k here) -> 1009; a fragmented binary message
# (with a ping between fragments) is reassembled; frames sent in pieces
# (a header cut, a ping cut inside a fragmented message); ping -> pong with the
# same payload; the close handshake is echoed; handshake errors are HTTP
# errors.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::WS;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport no_sessions_left/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
# im_close_grace 4s: a close "at once" must be told apart from the close
# timer (the grace) with room to spare on a loaded machine
write_conf($t, redis => $redis, uc => $uc,
    main => "im_max_message 4k;\nim_close_grace 4s;");
$t->run();

use constant { OP_CONT => 0, OP_TEXT => 1, OP_BINARY => 2, OP_CLOSE => 8,
    OP_PING => 9, OP_PONG => 10 };

# read (and answer) until $n pongs came in, within the harness's bound
sub pongs {
    my ($c, $n) = @_;
    Test::Nginx::wait_until(sub { $c->nothing_for(0.02); scalar($c->ws->pongs) >= $n });
}

my $base = 10000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);
    my $rid = $base + 1;
    my $n = $base + 10;

    my $r = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($r->login("u$rid", 'pw'), 0, "$name: recipient logs in");

    # -- close codes: one session per case
    my @cases = (
        ['text frame', 1003, sub { $_[0]->send_text('{"hello":"world"}') }],
        ['empty text frame', 1003, sub { $_[0]->send_text('') }],
        ['unmasked binary frame', 1002,
            sub { $_[0]->send_frame(opcode => OP_BINARY, payload => ping_msg(), mask => 0) }],
        ['RSV1 set', 1002,
            sub { $_[0]->send_frame(opcode => OP_BINARY, payload => ping_msg(), rsv => 4) }],
        ['reserved opcode 3', 1002, sub { $_[0]->send_frame(opcode => 3, payload => 'x') }],
        ['reserved control opcode 11', 1002, sub { $_[0]->send_frame(opcode => 11, payload => '') }],
        ['continuation without a message', 1002,
            sub { $_[0]->send_frame(opcode => OP_CONT, payload => ping_msg()) }],
        ['fragmented ping', 1002, sub { $_[0]->send_frame(opcode => OP_PING, payload => 'x', fin => 0) }],
        ['ping payload of 126 bytes', 1002, sub { $_[0]->send_ping('p' x 126) }],
        ['new message inside a fragmented one', 1002, sub {
            $_[0]->send_frame(opcode => OP_BINARY, payload => "\x03", fin => 0);
            $_[0]->send_frame(opcode => OP_BINARY, payload => "\x03", fin => 1) }],
        ['message of 4141 bytes (im_max_message 4k)', 1009,
            sub { $_[0]->send_binary(publish_msg($rid, msgid(), 'z' x 4100)) }],
        ['fragments adding up to 6000 bytes', 1009, sub {
            my $p = publish_msg($rid, msgid(), 'f' x 5950);
            $_[0]->send_fragmented(OP_BINARY, substr($p, 0, 2000), substr($p, 2000, 2000),
                substr($p, 4000)) }],
        ['frame header announcing 2^40 bytes', 1009, sub {
            $_[0]->send_raw(pack('CC', 0x82, 0x80 | 127) . pack('Q>', 1 << 40) . 'mask' . 'abc') }],
    );
    my @c;
    for my $case (@cases) {
        my ($what) = @$case;
        my $c = IM::Client->new(%o, auto_pong => 1);
        is($c->login('v' . $n++, 'pw'), 0, "$name: $what: logs in");
        push @c, $c;
    }
    $cases[$_][2]->($c[$_]->ws) for 0 .. $#cases;
    for my $i (0 .. $#cases) {
        my ($what, $code) = @{$cases[$i]};
        my $ws = $c[$i]->ws;
        my $closed = $ws->wait_closed(4);
        is($ws->close_code, $code, "$name: $what -> close $code");
        ok($closed, "$name: $what -> connection closed");
    }
    ok(!grep({ $_->{cmd} == PUBLISH } $r->drain(0.3)), "$name: nothing of those reached the recipient");

    # -- a working session: fragments, pings, pongs
    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login("s$base", 'pw'), 0, "$name: sender logs in");
    my $ws = $s->ws;

    my $id = msgid();
    my $p = publish_msg($rid, $id, 'fragmented ' . ('.' x 300));
    $ws->send_frame(opcode => OP_BINARY, payload => substr($p, 0, 1), fin => 0);
    $ws->send_frame(opcode => OP_CONT, payload => substr($p, 1, 40), fin => 0);
    $ws->send_ping('between fragments');
    $ws->send_frame(opcode => OP_CONT, payload => '', fin => 0);
    $ws->send_frame(opcode => OP_CONT, payload => substr($p, 41), fin => 1);
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: fragmented PUBLISH (ping between fragments) acked");
    my $m = $r->expect(cmd => PUBLISH, msgid => $id);
    is($m && $m->{raw}, push_msg($id, 'fragmented ' . ('.' x 300)), "$name: ... and delivered whole");
    is(join('|', $ws->pongs), 'between fragments', "$name: the ping between fragments got its pong");

    # frames in pieces, each sent apart so that the server likely reads
    # it apart: the first byte of a header, the rest of the header and
    # the payload in two parts; a ping cut in two inside a fragmented
    # message; then whole frames again. Between messages a session keeps
    # no parser (docs/decisions/049-idle-parser-per-read.md): the one of
    # a read that ends inside a frame must carry on in the next read.
    $id = msgid();
    my $f = IM::WS::build_frame(opcode => OP_BINARY,
        payload => publish_msg($rid, $id, 'in pieces ' . ('-' x 200)));
    for my $piece (substr($f, 0, 1), substr($f, 1, 7), substr($f, 8, 50), substr($f, 58)) {
        $ws->send_raw($piece);
        sleep(0.1);
    }
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: a frame sent in four pieces acked");
    $m = $r->expect(cmd => PUBLISH, msgid => $id);
    is($m && $m->{raw}, push_msg($id, 'in pieces ' . ('-' x 200)), "$name: ... and delivered whole");
    $id = msgid();
    $p = publish_msg($rid, $id, 'fragments in pieces');
    my $ping = IM::WS::build_frame(opcode => OP_PING, payload => 'cut ping');
    for my $piece (IM::WS::build_frame(opcode => OP_BINARY, payload => substr($p, 0, 5), fin => 0),
        substr($ping, 0, 4), substr($ping, 4),
        IM::WS::build_frame(opcode => OP_CONT, payload => substr($p, 5), fin => 1))
    {
        $ws->send_raw($piece);
        sleep(0.1);
    }
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: a fragmented PUBLISH with a ping cut in two acked");
    ok($r->expect(cmd => PUBLISH, msgid => $id), "$name: ... and delivered");
    pongs($s, 2);
    is(($ws->pongs)[-1], 'cut ping', "$name: ... and the cut ping got its pong");
    $id = $s->publish($rid, 'whole again');
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: whole frames after them acked");

    $ws->send_ping("\x00\x01binary ping\xff");
    pongs($s, 3);
    is(($ws->pongs)[-1], "\x00\x01binary ping\xff", "$name: ping -> pong with the same payload");
    $ws->send_ping('');
    pongs($s, 4);
    is(scalar($ws->pongs), 4, "$name: empty ping -> pong");
    $ws->send_ping('p' x 125);
    pongs($s, 5);
    is(($ws->pongs)[-1], 'p' x 125, "$name: 125-byte ping -> pong");
    # an unsolicited pong is ignored
    $ws->send_frame(opcode => OP_PONG, payload => 'unsolicited');
    $id = $s->publish($rid, 'after pongs');
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: unsolicited pong ignored, session works");

    # a message of exactly the limit is fine (4096 bytes)
    $id = msgid();
    my $big = publish_msg($rid, $id, 'q' x (4096 - 39));
    is(length $big, 4096, "$name: (a 4096-byte message)");
    $s->send($big);
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: message of exactly im_max_message acked");
    ok($r->expect(cmd => PUBLISH, msgid => $id), "$name: ... and delivered");

    # server frames: binary, unmasked, no RSV
    is(join(',', $ws->frame_errors, $r->ws->frame_errors), '', "$name: server frames well formed");

    # -- close handshake: the server echoes the close and closes TCP
    my $t0 = time;
    $ws->close(1000, 'bye');
    ok($ws->wait_closed(), "$name: close handshake: the server closes the connection");
    ok($ws->close_received, "$name: ... after echoing a close frame");
    is($ws->close_code, 1000, "$name: ... with code 1000");
    ok(time - $t0 < 3.5, "$name: ... at once (not by the close timer, 4s)");

    # an empty close frame (no code) is echoed too
    my $e = IM::Client->new(%o, auto_pong => 1);
    is($e->login('v' . $n++, 'pw'), 0, "$name: another session");
    $e->ws->send_frame(opcode => OP_CLOSE, payload => '');
    ok($e->ws->wait_closed(3) && $e->ws->close_received, "$name: empty close frame echoed, connection closed");

    # a client that never answers the server's close frame: the server
    # closes TCP itself (after im_close_grace, 4s, not sooner)
    my $q = IM::Client->new(%o, auto_pong => 1);
    is($q->login('v' . $n++, 'pw'), 0, "$name: a session that will not answer the close");
    $q->ws->{no_close_reply} = 1;    # IM::WS: don't echo the close
    my $t1 = time;
    $q->ws->send_text('provoke 1003');
    ok($q->ws->wait_closed(4 + $Test::Nginx::TIMEOUT), "$name: the server closes TCP without the client's close reply");
    ok(time - $t1 > 3.5, sprintf("$name: ... after the close timer (%.1fs)", time - $t1));
    is($q->close_code, 1003, "$name: ... after sending close 1003");

    $r->close(1000);

    # -- handshake errors
    my $path = $o{path};
    my $h = IM::WS->new(%o, headers => { Upgrade => undef, Connection => undef });
    ok(!$h->upgraded && ($h->status // 0) >= 400 && ($h->status // 0) < 500,
        "$name: GET $path without Upgrade -> 4xx (" . ($h->status // 'none') . ')');
    $h = IM::WS->new(%o, headers => { 'Sec-WebSocket-Version' => 8 });
    is($h->status, 426, "$name: Sec-WebSocket-Version 8 -> 426");
    like($h->header('sec-websocket-version') // '', qr/\b13\b/, "$name: ... with Sec-WebSocket-Version: 13");
    $h = IM::WS->new(%o, headers => { 'Sec-WebSocket-Key' => undef });
    is($h->status, 400, "$name: no Sec-WebSocket-Key -> 400");
    $h = IM::WS->new(%o, request => "POST $path HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n");
    ok(!$h->upgraded && ($h->status // 0) >= 400, "$name: POST -> refused (" . ($h->status // 'none') . ')');
    $h = IM::WS->new(%o, request => "GET $path HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n");
    ok(!$h->upgraded && ($h->status // 0) >= 400, "$name: HTTP/1.0 -> refused (" . ($h->status // 'none') . ')');
});

# every session ended: nothing leaked
{
    my ($ok, $st) = no_sessions_left(8);
    ok($ok, 'no session or user left in /status once every client is gone')
        or diag(explain($st));
}

$t->done_testing();
