#!/usr/bin/perl
# Heartbeat and closing (docs/PROTOCOL.md 3.5) over ws and wss: the server
# sends PING every im_ping_interval (1s here); a client that never answers
# PING_RESP is closed after im_ping_timeout (2s); one that answers stays; a
# client PING gets PING_RESP; DISCONNECT closes the session (no reply) and the
# uid is offline afterwards. On graceful shutdown (SIGQUIT) sessions live on
# until worker_shutdown_timeout (docs/ARCHITECTURE.md "Timers"; the harness
# sets 3s), then each gets <<9>> and WebSocket close 1001 and is closed; an
# unacked push is delivered after the restart.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
write_conf($t, redis => $redis, uc => $uc,
    main => "im_ping_interval 1s;\nim_ping_timeout 2s;\nim_close_grace 2s;");
$t->run();

my $base = 8000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);

    # run both clients side by side: one answers, one stays silent
    my $good = IM::Client->new(%o);
    my $mute = IM::Client->new(%o);
    is($good->login('u' . ($base + 1), 'pw'), 0, "$name: answering client logs in");
    my $login_at = time;
    is($mute->login('u' . ($base + 2), 'pw'), 0, "$name: silent client logs in");
    my $mute_login = time;

    # until the answering client has had 4 PINGs and the silent one is
    # closed (within the harness's bound): how often is checked by the gaps
    # (not sooner than the interval), how late by the bound
    my (@good_pings, @mute_pings, @good_other, $mute_closed);
    my $end = time + 4.5 + $Test::Nginx::TIMEOUT;
    while (time < $end && (@good_pings < 4 || !$mute_closed)) {
        if (my $m = $good->next(timeout => 0.05)) {
            if ($m->{cmd} == PING) {
                push @good_pings, time;
                is($m->{raw}, "\x07", "$name: PING is exactly <<7>>") if @good_pings == 1;
                $good->ping_resp;
            } else {
                push @good_other, $m;
            }
        }
        next if $mute_closed;
        if (my $m = $mute->next(timeout => 0.05)) {
            push @mute_pings, time if $m->{cmd} == PING;
        }
        $mute_closed = time if $mute->is_closed || $mute->ws->close_received;
    }
    my $n = @good_pings;
    ok($n >= 4, "$name: PINGs keep coming ($n)");
    my @gaps = map { $good_pings[$_] - $good_pings[$_ - 1] } 1 .. $#good_pings;
    ok(@gaps && !grep({ $_ < 0.6 } @gaps),
        "$name: PINGs im_ping_interval apart, not sooner: " . join(' ', map { sprintf '%.2f', $_ } @gaps));
    ok(!$good->is_closed, "$name: the answering client is still connected");
    is(join(',', map { $_->{name} } @good_other), '', "$name: nothing but PINGs meanwhile");

    $mute_closed //= $mute->ws->wait_closed(0.1) ? time : undef;
    ok($mute_closed, "$name: the silent client is closed");
    ok(@mute_pings >= 1, "$name: ... after it got a PING");
    # (the PING was read a little after it was sent: 2s less that delay)
    my $dt = ($mute_closed // time) - ($mute_pings[0] // $mute_login);
    ok($dt > 1.2, "$name: ... im_ping_timeout after it, not sooner: " . sprintf('%.2fs', $dt));

    # a client PING gets PING_RESP
    $good->ping;
    my $m = $good->expect(cmd => PING_RESP);
    is($m && $m->{raw}, "\x08", "$name: client PING -> exactly <<8>>");

    # still a session: a message to it arrives
    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login('s' . $base, 'pw'), 0, "$name: sender logs in");
    my $id = $s->publish($base + 1, 'hi');
    ok($good->expect(cmd => PUBLISH, msgid => $id), "$name: the answering client receives");
    $good->ack($id);

    # DISCONNECT: no reply, server closes, the uid is offline afterwards
    $good->disconnect;
    my @after = $good->drain(1);
    ok($good->ws->wait_closed(), "$name: DISCONNECT -> the server closes the connection");
    is(join(',', map { $_->{name} } grep { $_->{cmd} != PING } @after), '',
        "$name: ... without a reply");
    my $id2 = $s->publish($base + 1, 'while away');
    ok($s->expect(cmd => PUB_ACK, msgid => $id2), "$name: a message to the uid is acked (stored)");
    my $back = IM::Client->new(%o, auto_pong => 1);
    is($back->login('u' . ($base + 1), 'pw'), 0, "$name: logs in again");
    ok($back->expect(cmd => PUBLISH, msgid => $id2), "$name: ... and gets the message sent while away");
    $back->ack($id2);
    $back->close(1000);
    $s->close(1000);
});

# -- graceful shutdown: SIGQUIT while the clients keep answering PINGs
# (the harness adds worker_shutdown_timeout 3s)
{
    my (@c, $id);
    my $s = IM::Client->new(IM::Setup::transport('ws'), auto_pong => 1);
    is($s->login('s8900', 'pw'), 0, 'shutdown: sender logs in');
    for my $tr (transports()) {
        my ($name, %o) = @$tr;
        my $c = IM::Client->new(%o, auto_pong => 1);
        is($c->login('u' . (8901 + @c), 'pw'), 0, "shutdown: $name session logs in");
        push @c, [$name, $c];
    }
    push @c, ['sender', $s];
    $id = $s->publish(8901, 'unacked at shutdown');
    ok($c[0][1]->expect(cmd => PUBLISH, msgid => $id), 'shutdown: pushed, not acked');

    my $master = $t->master_pid;
    my $t0 = time;
    kill 'QUIT', $master;
    my %r;
    my $deadline = $t0 + 3 + $Test::Nginx::TIMEOUT;
    while (time < $deadline && grep { !$r{$_->[0]}{closed} } @c) {
        for my $e (@c) {
            my ($name, $c) = @$e;
            next if $r{$name}{closed};
            for my $m ($c->drain(0.05)) {
                $r{$name}{disconnect} //= time - $t0 if $m->{raw} eq disconnect_msg();
            }
            # (after a close frame IM::WS reads no more messages: look for EOF)
            $r{$name}{close_frame} //= time - $t0 if $c->ws->close_received;
            $c->ws->wait_closed(0.05) if $c->ws->close_received;
            $r{$name}{closed} = time - $t0 if $c->is_closed;
        }
    }
    for my $e (@c) {
        my ($name, $c) = @$e;
        ok($r{$name}{disconnect}, "shutdown: $name got <<9>> DISCONNECT");
        is($c->close_code, 1001, "shutdown: $name got WebSocket close 1001");
        # ($t0 is before the SIGQUIT: the 3s start after it)
        ok($r{$name}{closed} && $r{$name}{closed} > 2.5,
            "shutdown: $name connection closed by the server at worker_shutdown_timeout (3s), not sooner");
        note(sprintf "shutdown: %s: DISCONNECT at %s, close frame %s at %s, TCP closed at %s (s after SIGQUIT)",
            $name, map { defined $_ ? (/^\d+\.\d+$/ ? sprintf('%.2f', $_) : $_) : '-' }
            $r{$name}{disconnect}, $c->close_code, $r{$name}{close_frame}, $r{$name}{closed});
    }
    # let nginx go: the clients close what the server left open
    for my $e (@c) {
        my ($name, $c) = @$e;
        next if $c->is_closed;
        $c->close(1000);
        $c->wait_closed(2);
    }
    ok(wait_until(sub { !Test::Nginx::alive($master) }, 5), 'shutdown: nginx exits once the sessions are gone');
    $t->stop;
    $t->run;
    my $c = IM::Client->new(IM::Setup::transport('ws'), auto_pong => 1);
    is($c->login('u8901', 'pw'), 0, 'shutdown: logs in after the restart');
    my $m = $c->expect(cmd => PUBLISH, msgid => $id);
    ok($m, 'shutdown: the push unacked at shutdown is delivered after the restart');
    $c->ack($id) if $m;
    $c->close(1000);
}

$t->done_testing();
