#!/usr/bin/perl
# Random bytes never crash a worker (issue 3 item 7), ws and wss: a bounded
# fuzz of a few hundred random and mutated protocol messages on logged-in
# sessions, random first messages, random frames and random handshakes.
# The worker must survive (same pid; the harness fails the file on
# "exited on signal"), and a bystander session keeps working.
# IM_FUZZ_SEED=n reproduces a run.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port http_get wait_until/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::WS;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport no_sessions_left/;

my $seed = $ENV{IM_FUZZ_SEED} // int(rand(1 << 30));
srand($seed);
note("IM_FUZZ_SEED=$seed");

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
write_conf($t, redis => $redis, uc => $uc,
    main => "im_max_payload 1000;\nim_max_message 8k;\nim_close_grace 1s;\n"
        . "im_connect_timeout 2s;\nim_repush_interval 1s;");
$t->run();

my @workers;
wait_until(sub { @workers = $t->worker_pids; @workers }, 5);
ok(scalar @workers, 'worker running: ' . join(' ', @workers));

sub rbytes { join '', map { chr int rand 256 } 1 .. $_[0] }

my @cmds = (0 .. 13, 20, 255);
my $uidbase = 12000;

# a random protocol message: pure noise, or a valid one mutated
sub random_message {
    my ($to) = @_;
    my $k = int rand 10;
    return rbytes(int rand 64) if $k == 0;
    return chr($cmds[rand @cmds]) . rbytes(int rand 80) if $k <= 2;
    my @valid = (
        publish_msg($to, msgid(), rbytes(int rand 60)),
        group_publish_msg(1 + int rand 5, msgid(), rbytes(int rand 30)),
        part_publish_msg(1, msgid(), [map { $to } 1 .. int rand 4], 'x'),
        pub_ack(msgid()), group_pub_ack(msgid() . '_' . msgid()), part_pub_ack(msgid()),
        ping_msg(), ping_resp_msg(), connect_msg('u1', 'p', role => 1, client_id => 2),
        pack('CN', PUBLISH, $to) . msgid() . pack('n', 65535) . 'short',
        pack('CN', GROUP_PART_PUBLISH, 1) . msgid() . pack('n', 65535),
    );
    my $m = $valid[rand @valid];
    my $mut = int rand 4;
    if ($mut == 0) {            # flip bytes
        for (1 .. 1 + int rand 3) {
            my $i = int rand length $m;
            substr($m, $i, 1) = chr(ord(substr($m, $i, 1)) ^ (1 << int rand 8));
        }
    } elsif ($mut == 1) {       # cut
        $m = substr($m, 0, int rand length $m);
    } elsif ($mut == 2) {       # append
        $m .= rbytes(1 + int rand 8);
    }
    return $m;                  # or valid as is
}

my $n = 0;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $uidbase += 100 * ($i + 1);
    my $by_uid = $uidbase + 99;
    my $by = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($by->login("u$by_uid", 'pw'), 0, "$name: bystander logs in");

    # -- 300 random messages over 10 sessions, reconnecting as they close
    my @s;
    my $new = sub {
        my $c = eval { IM::Client->new(%o, auto_pong => 1, auto_ack => 1, timeout => 3) }
            or return undef;
        $c->login('u' . ($uidbase + int rand 10), 'pw', role => 1, client_id => int rand 4);
        return $c;
    };
    push @s, $new->() for 1 .. 10;
    my ($sent, $fail) = (0, 0);
    for my $i (1 .. 300) {
        my $k = int rand @s;
        $s[$k] = $new->() if !$s[$k] || $s[$k]->is_closed || $s[$k]->ws->close_received;
        $fail++, next unless $s[$k];
        my $to = rand() < 0.3 ? $by_uid : $uidbase + int rand 10;
        $s[$k]->send(random_message($to)) and $sent++;
        $s[$k]->drain(0.001) unless $i % 7;
    }
    note("$name: $sent random messages sent on sessions, $fail connections failed");
    ok($fail < 10, "$name: sessions could be (re)opened during the fuzz ($fail failures)");

    # -- random first messages (no CONNECT)
    for (1 .. 20) {
        my $c = eval { IM::Client->new(%o, timeout => 3) } or next;
        $c->send(rand() < 0.5 ? random_message($by_uid) : "\x01" . rbytes(int rand 40));
    }

    # -- random frames: random header bits, lengths and payloads
    for (1 .. 40) {
        my $c = eval { IM::Client->new(%o, auto_pong => 1, timeout => 3) } or next;
        $c->login('u' . ($uidbase + 20 + int rand 5), 'pw') if rand() < 0.5;
        my $w = $c->ws;
        if (rand() < 0.5) {
            $w->send_frame(opcode => int rand 16, payload => rbytes(int rand 200),
                fin => int rand 2, rsv => (rand() < 0.8 ? 0 : int rand 8),
                mask => (rand() < 0.9 ? 1 : 0),
                length_bytes => (0, 0, 0, 2, 8)[rand 5]);
        } else {
            $w->send_raw(rbytes(1 + int rand 100));
        }
    }

    # -- random handshakes (not waiting for the answers)
    my @hs;
    for (1 .. 20) {
        my $req = rand() < 0.5 ? rbytes(int rand 300)
            : "GET $o{path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                . "Sec-WebSocket-Key: " . rbytes(int rand 30) . "\r\nSec-WebSocket-Version: "
                . (int rand 20) . "\r\n" . (rand() < 0.5 ? "\r\n" : rbytes(20) . "\r\n\r\n");
        my $ws = eval { IM::WS->new(%o, timeout => 3, connect_only => 1) } or next;
        $ws->send_raw($req);
        push @hs, $ws;
    }

    # -- the bystander is fine, the worker is the same
    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login("s$uidbase", 'pw'), 0, "$name: a new session logs in after the fuzz");
    my $id = $s->publish($by_uid, 'after the fuzz');
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: ... and publishes");
    ok($by->expect(cmd => PUBLISH, msgid => $id), "$name: the bystander receives");
    is(join(' ', $t->worker_pids), join(' ', @workers), "$name: same worker process (no crash)");
    $_->close(1000) for grep { $_ } $s, $by, @s;
    $_->disconnect for @hs;
});

like(http_get('/status', port => port(9095)) // '', qr/"sessions"/, 'status still answers');
is(join(' ', $t->worker_pids), join(' ', @workers), 'same worker process at the end');
# every session ended: nothing leaked
{
    my ($ok, $st) = no_sessions_left(8);
    ok($ok, 'no session or user left in /status once every client is gone')
        or diag(explain($st));
}

$t->done_testing();
