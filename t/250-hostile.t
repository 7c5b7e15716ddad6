#!/usr/bin/perl
# Hostile input (issue 18 item 6), one worker taking all of it while alice
# and bob chat beside it (a forked child; every message they send must be
# acked and delivered):
#   - a storm of 3,000 idle connections (plain HTTP that never sends a
#     byte, WebSocket handshakes never followed by CONNECT, TCP API
#     connections that never send) and 300 slow handshakes trickling a
#     byte at a time and never finishing: all closed by the server's own
#     timeouts (client_header_timeout, im_connect_timeout, im_tcp_timeout,
#     6 s here), not sooner; 20 handshakes and CONNECTs sent byte by byte
#     log in;
#   - garbage: random bytes before the HTTP handshake, invalid WebSocket
#     frames (unmasked, reserved bits and opcodes, lengths beyond
#     im_max_message or with the top bit set, fragmented and long control
#     frames), valid frames carrying garbage before and after login, TCP
#     API lengths of 0, 2^31 and 2^32 - 1 and garbage commands: each gets
#     the answer docs/PROTOCOL.md (2, 3.1, 4, 6) gives and is closed;
#   - a recipient that never reads while a sender floods it: closed at
#     im_send_buffer; the sender gets an ack for every message and goes on;
#   - 4,000 CONNECTs with wrong passwords on 2,000 connections, at most
#     100 open at a time, half of them guessing alice's and bob's
#     passwords (limit_req per user name in the auth location, as
#     conf/nginx.conf has it), half a user name each: exactly one
#     CONNECT_ACK each (3, or 2 over the limit), the user centre asked
#     once per 3; those that stay are closed after im_close_grace;
#   - 1,000 CONNECTs whose clients reset or close at once, while the user
#     centre is asked; over 64 KiB sent before the CONNECT_ACK: 1008.
# Every session and connection is gone at the end, the worker the same.
# Memory: the worker's RSS (/proc/PID/smaps_rollup) before, at the storm's
# peak and after everything; asserted: the growth per connection at the
# peak, and the RSS after the storm and at the end within a fixed margin
# of the baseline.
# The figures show with prove -v (note).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port http_get wait_until/;
use Time::HiRes qw/time sleep/;
use IO::Poll qw/POLLIN POLLOUT POLLERR POLLHUP/;
use IO::Select;
use JSON::PP;
use POSIX ();
use MIME::Base64 ();
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::WS;
use IM::TCP;
use IM::Proto qw/:all/;

my $t = Test::Nginx->new()->has(qw/http stream redis stub_status/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t,
    users => "alice alice-secret 1001\nbob bob-secret 1002\n"
        . "slowpoke pw delay:2:70000\n* pw uid-from-name\n");

# the timers under test, short: every idle, slow or refused connection
# must be gone within a few seconds.  Re-push and ping out of the way:
# the chat acks at once but is read by a child competing for two CPUs
# with everything else, and the victim is never read on purpose.
my $TMO = 6;
$t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 1;
worker_rlimit_nofile 16384;
im_redis ${\ $redis->addr };
im_connect_timeout ${TMO}s;
im_close_grace 1s;
im_send_buffer 64k;
im_max_message 64k;
im_repush_interval 60s;
im_ping_interval 300s;
events { worker_connections 10000; }
http {
    %%TEST_GLOBALS_HTTP%%
    client_header_timeout ${TMO}s;
    # password guessing per user name, as conf/nginx.conf limits it
    limit_req_zone \$im_username zone=login:1m rate=6r/m;
    server {
        listen 127.0.0.1:%%PORT_9095%% backlog=4096;
        location = /ws { im_websocket; im_auth /_auth; }
        ${\ $uc->auth_location(extra => 'limit_req zone=login burst=12 '
            . "nodelay;\n            limit_req_status 429;") }
        location = /status { im_status; }
        location = /conns { stub_status; }
    }
}
stream {
    %%TEST_GLOBALS_STREAM%%
    server {
        listen 127.0.0.1:%%PORT_19095%% backlog=4096;
        im_tcp;
        im_tcp_timeout ${TMO}s;
    }
}
EOF
$t->run();

my $BOUND = $Test::Nginx::TIMEOUT;    # the harness's bound of a wait
my $MAX_MESSAGE = 65536;

my @workers;
wait_until(sub { @workers = $t->worker_pids; @workers == 1 }, $BOUND);
my $wpid = $workers[0];
ok($wpid, "one worker ($wpid)");

###############################################################################
# figures

sub status {
    my $r = http_get('/status', port => port(9095)) // '';
    my ($body) = $r =~ /\r\n\r\n(.*)\z/s;
    return eval { decode_json($body // '') } // {};
}

# nginx's count of open client connections (stub_status counts this one)
sub active {
    my $r = http_get('/conns', port => port(9095)) // '';
    return $r =~ /Active connections:\s*(\d+)/ ? $1 - 1 : -1;
}

# the worker's memory, kB: Rss, Pss, Anonymous
sub mem {
    my %m;
    open my $fh, '<', "/proc/$wpid/smaps_rollup" or return {};
    while (<$fh>) {
        $m{$1} = $2 if /^(\w+):\s+(\d+) kB/;
    }
    return \%m;
}

my $peak_rss = 0;
my $last_sample = 0;
sub sample {
    return if time - $last_sample < 0.1;
    $last_sample = time;
    my $rss = mem()->{Rss} // 0;
    $peak_rss = $rss if $rss > $peak_rss;
}

sub fmt_mem {
    my ($m) = @_;
    return sprintf 'Rss %d kB, Pss %d kB, Anonymous %d kB',
        $m->{Rss} // -1, $m->{Pss} // -1, $m->{Anonymous} // -1;
}

###############################################################################
# many connections at once, without blocking on any of them

my $poll_failures = 0;

# $n connections to $port; each { conn, t0 } (t0: taken before connect)
sub open_many {
    my ($n, $port, %o) = @_;
    my @c;
    for (1 .. $n) {
        my $t0 = time;
        my $conn = eval { IM::WS::Conn->new(port => $port, %o) };
        unless ($conn) {
            $poll_failures++;
            diag("connect: $@") if $poll_failures < 5;
            next;
        }
        push @c, { conn => $conn, t0 => $t0 };
    }
    return @c;
}

# read every connection until done->($c) for all, or the deadline; a
# connection's end of file is noted with its time (t_eof).  tick->() runs
# between polls (trickling bytes, sampling memory)
sub pump {
    my ($cs, $done, $deadline, $tick) = @_;
    while (1) {
        sample();
        $tick->() if $tick;
        my @open = grep { !$_->{conn}->eof && !$done->($_) } @$cs;
        return 1 unless grep { !$done->($_) } @$cs;
        return 0 if time >= $deadline;
        my $poll = IO::Poll->new;
        my %by;
        for my $c (@open) {
            my $s = $c->{conn}->sock or next;
            $poll->mask($s => POLLIN);
            $by{fileno $s} = $c;
        }
        $poll->poll(0.05);
        for my $s ($poll->handles(POLLIN | POLLHUP | POLLERR)) {
            my $c = $by{fileno $s} or next;
            $c->{conn}->read_some(0);
            $c->{t_eof} //= time if $c->{conn}->eof;
            ws_scan($c) if $c->{ws};
        }
    }
}

sub closed { $_[0]{conn}->eof }

# the WebSocket side of a bulk connection: the 101 head, then frames
sub ws_request {
    my ($port) = @_;
    my $key = MIME::Base64::encode_base64(
        join('', map { chr int rand 256 } 1 .. 16), '');
    return "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n\r\n";
}

sub ws_scan {
    my ($c) = @_;
    my $r = \$c->{conn}{rbuf};
    unless (defined $c->{status}) {
        return unless $$r =~ s{\AHTTP/1\.1 (\d+)[^\r]*\r\n.*?\r\n\r\n}{}s;
        $c->{status} = $1;
    }
    while (my ($f, $used) = IM::WS::parse_frame($$r)) {
        substr($$r, 0, $used, '');
        if ($f->{opcode} == 8) {
            $c->{close} = length $f->{payload} >= 2
                ? unpack('n', $f->{payload}) : 0;
        } elsif ($f->{opcode} == 2 || $f->{opcode} == 1) {
            push @{$c->{msgs}}, $f->{payload};
        }
    }
}

# WebSocket handshakes on $n new connections; returns the upgraded ones
sub ws_many {
    my ($n, $deadline) = @_;
    my @c = open_many($n, port(9095));
    for my $c (@c) {
        $c->{ws} = 1;
        $c->{conn}->write_all(ws_request(port(9095)), $deadline);
    }
    pump(\@c, sub { defined $_[0]{status} }, $deadline);
    return grep { ($_->{status} // 0) == 101 } @c;
}

sub frame { IM::WS::build_frame(@_) }
sub bin { frame(opcode => 2, payload => $_[0]) }

sub rbytes { join '', map { chr int rand 256 } 1 .. $_[0] }

sub sent {
    my ($c, $bytes) = @_;
    $c->{conn}->write_all($bytes, time + $BOUND);
}

###############################################################################
# alice and bob chat in a child for as long as the storm lasts

pipe(my $res_r, my $res_w) or die "pipe: $!\n";
pipe(my $stop_r, my $stop_w) or die "pipe: $!\n";
my $chat = fork() // die "fork: $!\n";
if ($chat == 0) {
    close $res_r;
    close $stop_w;
    $res_w->autoflush(1);
    my %r = (sent => 0, acked => 0, delivered => 0, max_lat => 0,
        fail => []);
    my $wait = 30;    # a message not acked or delivered in 30 s is lost
    my $a = IM::Client->new(port => port(9095), auto_pong => 1,
        auto_ack => 1);
    my $b = IM::Client->new(port => port(9095), auto_pong => 1,
        auto_ack => 1);
    $r{login} = join ',', map { $_ // 'none' }
        $a->login('alice', 'alice-secret', uid => 1001),
        $b->login('bob', 'bob-secret', uid => 1002);
    print $res_w "ready\n";
    my $stop = IO::Select->new($stop_r);
    my $end = time + 240;
    for (my $i = 0; time < $end; $i++) {
        last if $stop->can_read($i % 2 ? 0 : 0.02);
        my ($from, $to, $uid) = $i % 2 ? ($b, $a, 1001) : ($a, $b, 1002);
        my $t0 = time;
        my $id = $from->publish($uid, "chat $i");
        $r{sent}++;
        my $ack = $from->expect(cmd => PUB_ACK, msgid => $id,
            timeout => $wait);
        $ack ? $r{acked}++ : push @{$r{fail}}, "message $i not acked";
        my $m = $to->expect(cmd => PUBLISH, msgid => $id, timeout => $wait);
        ($m && ($m->{text} // '') eq "chat $i")
            ? $r{delivered}++ : push @{$r{fail}}, "message $i not delivered";
        my $lat = time - $t0;
        $r{max_lat} = $lat if $lat > $r{max_lat};
        last if @{$r{fail}} > 10;
    }
    $r{closed} = ($a->is_closed ? 1 : 0) + ($b->is_closed ? 1 : 0);
    $a->close(1000);
    $b->close(1000);
    print $res_w encode_json(\%r), "\n";
    close $res_w;
    POSIX::_exit(0);
}
close $res_w;
close $stop_r;
{
    my $sel = IO::Select->new($res_r);
    my $line = $sel->can_read(3 * $BOUND) ? <$res_r> : undef;
    is($line, "ready\n", 'alice and bob are chatting');
}

###############################################################################
# baseline: the chat running, a few logins and connections behind us

for my $k (1 .. 20) {
    my $c = IM::Client->new(port => port(9095), auto_pong => 1);
    $c->login("warm$k", 'pw');
    $c->close(1000);
}
my $tcp = IM::TCP->new(port => port(19095));
$tcp->request(ping_msg());
$tcp->close;
wait_until(sub { (status()->{sessions} // 0) <= 2 }, $BOUND);
my $base = mem();
my $base_active = active();
note('baseline: ' . fmt_mem($base) . ", $base_active connections");

###############################################################################
# the storm: idle connections and slow handshakes

my (@raw, @noconnect, @tcpidle, @slow, @bytewise);

# every connection of @slow sends one byte at a time, a byte every 0.3 s,
# never the whole handshake before client_header_timeout
my $trickle_at = 0;
sub trickle {
    return if time - $trickle_at < 0.3;
    $trickle_at = time;
    for my $c (@slow) {
        next if closed($c) || !length $c->{left};
        my $n = $c->{conn}->write_nb(substr($c->{left}, 0, 1));
        substr($c->{left}, 0, 1, '') if $n;
        $c->{trickled}++ if $n;
    }
}

# the worker's growth with each kind, once nginx counts it open (a short
# wait: these figures are for the report, the assertion comes later)
my $storm_t0 = time;
my ($open, $at_peak) = (0, $base);
sub step {
    my ($what, @c) = @_;
    $_->{kind} = $what for @c;
    my $n = $open + @c;
    wait_until(sub { ($open = active() - $base_active) >= $n }, 2);
    my $m = mem();
    note(sprintf 'storm: %4d %-22s Rss +%5d kB, %5.0f bytes each',
        scalar @c, $what, $m->{Rss} - $at_peak->{Rss},
        @c ? ($m->{Rss} - $at_peak->{Rss}) * 1024 / @c : 0);
    $at_peak = $m;
    return @c;
}
{
    my $deadline = time + 30;
    # in batches: the upgrades are answered while the next ones connect
    my @ws;
    push @ws, ws_many(300, $deadline) for 1 .. 5;
    @noconnect = step('ws without CONNECT', @ws);
    @tcpidle = step('idle tcp', open_many(500, port(19095)));
    @raw = step('idle http', open_many(1000, port(9095)));
    my @s = open_many(300, port(9095));
    $_->{left} = ws_request(port(9095)) . bin(connect_msg('x', 'y'))
        for @s;
    @slow = @s;
    trickle();
    @slow = step('slow handshakes', @s);
}
sample();

my $storm_n = @raw + @noconnect + @tcpidle + @slow;
is($storm_n, 3300, 'the storm: 3,300 connections open') or
    diag("$poll_failures connects failed");
note(sprintf 'storm open in %.1fs: %d idle http, %d ws without CONNECT, '
    . '%d idle tcp, %d slow; nginx counts %d more connections',
    time - $storm_t0, scalar @raw, scalar @noconnect, scalar @tcpidle,
    scalar @slow, $open);
note('at the peak: ' . fmt_mem($at_peak));

# 20 handshakes and logins sent a byte per write: the slow path of the
# parsers, not slow in time
{
    for my $k (1 .. 20) {
        my $c = IM::Client->new(port => port(9095), connect_only => 1,
            auto_pong => 1);
        # the handshake by hand (IM::WS would send it in one write); only
        # the status of the answer is checked
        $c->ws->conn->write_all($_) for split //, ws_request(port(9095));
        push @bytewise, $c;
    }
    my $ok = 0;
    for my $c (@bytewise) {
        my $conn = $c->ws->conn;
        my $deadline = time + $BOUND;
        $conn->read_some($deadline)
            while $conn->{rbuf} !~ /\r\n\r\n/ && !$conn->eof
            && time < $deadline;
        next unless $conn->{rbuf}
            =~ s{\AHTTP/1\.1 101 [^\r]*\r\n.*?\r\n\r\n}{}s;
        $conn->write_all($_)
            for split //, bin(connect_msg('bytewise' . (50000 + $ok),
            'pw'));
        my $m = $c->expect(cmd => CONNECT_ACK);
        $ok++ if $m && $m->{code} == 0;
    }
    is($ok, 20, 'handshakes and CONNECTs sent a byte per write: 20 logins');
    $_->close(1000) for @bytewise;
}

# the storm ends by the server's timers
{
    my @all = (@raw, @noconnect, @tcpidle, @slow);
    my $deadline = time + $TMO + 3 * $BOUND;
    my $done = pump(\@all, \&closed, $deadline, \&trickle);
    ok($done, 'every idle and slow connection was closed by the server')
        or diag(scalar(grep { !closed($_) } @all) . ' still open');
    my $storm_rss = $peak_rss;

    # nginx's timers run on its own clock, in whole milliseconds, read
    # when epoll_wait returned: a close seen by this clock can come a few
    # milliseconds before the timer's length; 0.25 s tells that apart from
    # a close that is not the timer's
    my @early = grep { $_->{t_eof} && $_->{t_eof} - $_->{t0} < $TMO - 0.25 }
        @all;
    is(scalar @early, 0, "none of them sooner than ${TMO}s after it opened")
        or diag(join "\n", map { sprintf '%s after %.3fs: %s',
            $_->{kind}, $_->{t_eof} - $_->{t0},
            unpack('H*', substr($_->{conn}{rbuf}, 0, 40)) }
            @early[0 .. ($#early > 9 ? 9 : $#early)]);

    is(scalar(grep { length $_->{conn}{rbuf} } @raw, @tcpidle), 0,
        'idle http and tcp connections: closed with no answer');
    is(scalar(grep { ($_->{close} // -1) != 1008 } @noconnect), 0,
        'no CONNECT within im_connect_timeout: close 1008 (3.1)');
    is(scalar(grep { $_->{msgs} } @noconnect), 0,
        '... and no message before it');
    is(scalar(grep { length $_->{conn}{rbuf} } @slow), 0,
        'slow handshakes: closed by client_header_timeout, no answer');
    my ($min) = sort { $a <=> $b } map { $_->{trickled} // 0 } @slow;
    ok($min >= 2, "... each had sent at least two bytes ($min)");

    # the figure: the worker's highest Rss during the storm over the
    # connections it opened (on a loaded machine the first may be gone
    # before the last are open: their memory is still held, freed but not
    # trimmed, so this can only come out lower, never higher)
    my $per = ($storm_rss - $base->{Rss}) * 1024 / $storm_n;
    note(sprintf 'storm: %d connections, the highest Rss %d kB, +%d kB '
        . 'over the baseline: %.0f bytes per connection', $storm_n,
        $storm_rss, $storm_rss - $base->{Rss}, $per);
    # measured 5.6 KB (most of it the HTTP request pools of the upgraded
    # connections waiting for CONNECT, 10 KB each): 3 times that
    cmp_ok($per, '<', 17 * 1024, 'storm: under 17 KB per connection');

    # and gives it back: the worker trims its heap a second after a burst
    # of sessions ended (docs/decisions/015, 028)
    my $back;
    wait_until(sub { ($back = mem()->{Rss} - $base->{Rss}) < 1024 },
        2 + 2 * $BOUND);
    SKIP: {
        # ASan keeps freed memory in its quarantine, and its allocator
        # has no heap to trim: nothing is given back under a sanitizer
        skip 'sanitizer build: freed memory stays in quarantine', 1
            if $Test::Nginx::SANITIZER;
        cmp_ok($back, '<', 4096,
            'after the storm: Rss within 4 MB of the baseline');
    }
    note("after the storm: Rss $back kB over the baseline");
}
@raw = @noconnect = @tcpidle = @slow = ();

###############################################################################
# garbage

my @cases;    # [what, connection, check]
{
    my $deadline = time + 3 * $BOUND;

    # random bytes instead of an HTTP request: an HTTP error or nothing
    for my $c (open_many(100, port(9095))) {
        sent($c, rbytes(1 + int rand 300));
        push @cases, ['random bytes before the handshake', $c, sub {
            my ($c) = @_;
            $c->{conn}{rbuf} eq '' || $c->{conn}{rbuf} =~ m{\AHTTP/1\.1 4\d\d }
        }];
    }
    for my $c (open_many(20, port(9095))) {
        sent($c, "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: "
            . ('a' x 20000) . "\r\n\r\n");
        push @cases, ['a 20 KB header line', $c, sub {
            $_[0]{conn}{rbuf} =~ m{\AHTTP/1\.1 4\d\d } }];
    }

    # invalid frames (2): before CONNECT and after a login
    my $n = 0;
    my @frames = (
        ['unmasked frame', 1002, frame(opcode => 2,
            payload => connect_msg('u', 'p'), mask => 0)],
        ['RSV1 set', 1002, frame(opcode => 2, payload => ping_msg(), rsv => 4)],
        ['RSV3 set', 1002, frame(opcode => 2, payload => ping_msg(), rsv => 1)],
        ['reserved opcode 3', 1002, frame(opcode => 3, payload => 'x')],
        ['reserved control opcode 11', 1002, frame(opcode => 11)],
        ['stray continuation', 1002, frame(opcode => 0, payload => 'x')],
        ['fragmented ping', 1002, frame(opcode => 9, payload => 'x',
            fin => 0)],
        ['fragmented close', 1002, frame(opcode => 8, payload => "\x03\xe8",
            fin => 0)],
        ['ping of 126 bytes', 1002, frame(opcode => 9,
            payload => 'p' x 126)],
        ['length 2^40', 1009, pack('CCQ>', 0x82, 0xff, 1 << 40) . 'mask'],
        ['length with the top bit set', 1002,
            pack('CCQ>', 0x82, 0xff, 1 << 63) . 'mask'],
        ['length im_max_message + 1', 1009,
            pack('CCQ>', 0x82, 0xff, $MAX_MESSAGE + 1) . 'mask'],
        ['fragments over im_max_message', 1009,
            frame(opcode => 2, fin => 0, payload => 'f' x 40000)
            . frame(opcode => 0, fin => 1, payload => 'f' x 40000)],
        ['text frame', 1003, frame(opcode => 1, payload => 'hello')],
    );
    my @pre = ws_many(scalar @frames * 10, $deadline);
    my @post = ws_many(scalar @frames * 3, $deadline);
    for my $c (@post) {
        sent($c, bin(connect_msg('g' . (30000 + $n++), 'pw')));
    }
    pump(\@post, sub { $_[0]{msgs} }, $deadline);
    ok(!grep({ ($_->{msgs}[0] // '') ne connect_ack(0) } @post),
        'garbage after login: ' . scalar(@post) . ' sessions logged in');
    my @fc = ((map { [$pre[$_], $_, 0] } 0 .. $#pre),
        (map { [$post[$_], $_, 1] } 0 .. $#post));
    for my $fc (@fc) {
        my ($c, $i, $skip) = @$fc;    # $skip: the CONNECT_ACK
        my ($what, $code, $bytes) = @{$frames[$i % @frames]};
        my $when = $skip ? 'after login' : 'before CONNECT';
        sent($c, $bytes);
        push @cases, ["$what $when", $c, sub {
            ($_[0]{close} // -1) == $code
                && @{$_[0]{msgs} // []} == $skip
        }, "close $code"];
    }

    # garbage in valid frames (3.1, 6)
    my @g = ws_many(100, $deadline);
    for my $c (@g[0 .. 39]) {
        # a first message that is not CONNECT: no answer, 1008
        my $m = chr(2 + int rand 254) . rbytes(int rand 100);
        sent($c, bin($m));
        push @cases, ['a first message that is not CONNECT', $c, sub {
            ($_[0]{close} // -1) == 1008 && !$_[0]{msgs} }, 'close 1008'];
    }
    for my $c (@g[40 .. 59]) {
        # CONNECT with UserLen past the end: <<10, 1>>, 1002
        sent($c, bin("\x01\xff\xff" . rbytes(int rand 100)));
        push @cases, ['a malformed CONNECT', $c, sub {
            ($_[0]{close} // -1) == 1002
                && join('|', @{$_[0]{msgs} // []}) eq "\x0a\x01"
        }, '<<10, 1>>, close 1002'];
    }
    my @late = @g[60 .. 99];
    sent($_, bin(connect_msg('g' . (30000 + $n++), 'pw'))) for @late;
    pump(\@late, sub { $_[0]{msgs} }, $deadline);
    for my $i (0 .. $#late) {
        my $c = $late[$i];
        my ($m, $cmd);
        if ($i % 2) {
            # an unknown command with noise after it
            $cmd = 13 + int rand 243;
            $cmd = 99 if $cmd == 20;
            $m = chr($cmd) . rbytes(int rand 100);
        } else {
            # a PUBLISH cut short
            $cmd = 3;
            $m = "\x03" . rbytes(int rand 38);
        }
        sent($c, bin($m));
        my $want = connect_ack(0) . '|' . pack('CC', 10, $cmd);
        push @cases, ['garbage after login', $c, sub {
            ($_[0]{close} // -1) == 1002
                && join('|', @{$_[0]{msgs} // []}) eq $want
        }, '<<10, Cmd>>, close 1002'];
    }

    # the TCP API (2, 4)
    my @tc = (
        ['length 2^31', pack('N', 1 << 31) . 'abcd', ''],
        ['length 2^32 - 1', pack('N', 0xffffffff), ''],
        ['length im_max_message + 1', pack('N', $MAX_MESSAGE + 1) . 'x', ''],
        ['random bytes', undef, ''],
        ['length 0', pack('N', 0), tcp_frame("\x0a\x00")],
        ['an unknown command', tcp_frame("\x63" . 'x' x 10),
            tcp_frame("\x0a\x63")],
        ['CONNECT', tcp_frame(connect_msg('u', 'p')), tcp_frame("\x0a\x01")],
        ['a PUBLISH cut short', tcp_frame("\x03\x00\x00"),
            tcp_frame("\x0a\x03")],
    );
    my @t = open_many(scalar @tc * 10, port(19095));
    for my $i (0 .. $#t) {
        my ($what, $bytes, $want) = @{$tc[$i % @tc]};
        $bytes //= chr(1 + int rand 255) . rbytes(3 + int rand 200);
        sent($t[$i], $bytes);
        push @cases, ["tcp: $what", $t[$i], sub {
            $_[0]{conn}{rbuf} eq $want }, $want eq '' ? 'no answer'
            : 'its <<10, Cmd>>'];
    }
    # and a frame that never ends: closed by im_tcp_timeout
    for my $c (open_many(10, port(19095))) {
        sent($c, pack('N', 100) . 'x' x 10);
        push @cases, ['tcp: a frame that never ends', $c, sub {
            $_[0]{conn}{rbuf} eq '' }, 'no answer'];
    }

    my @all = map { $_->[1] } @cases;
    ok(pump(\@all, \&closed, time + $TMO + 3 * $BOUND),
        'every garbage connection was closed by the server')
        or diag(scalar(grep { !closed($_) } @all) . ' still open');
    my (%bad, %count);
    for my $case (@cases) {
        my ($what, $c, $check) = @$case;
        $count{$what}++;
        next if closed($c) && $check->($c);
        push @{$bad{$what}}, sprintf 'close %s, msgs %s, rest %s',
            $c->{close} // 'none',
            join('|', map { unpack 'H*', $_ } @{$c->{msgs} // []}),
            unpack('H*', substr($c->{conn}{rbuf}, 0, 40));
    }
    for my $what (sort keys %count) {
        my ($case) = grep { $_->[0] eq $what } @cases;
        ok(!$bad{$what}, "$what ($count{$what})"
            . ($case->[3] ? ": $case->[3]" : ''))
            or diag(join "\n", @{$bad{$what}}[0 .. 2]);
    }
}
@cases = ();
note('after the garbage: ' . fmt_mem(mem()));

###############################################################################
# a recipient that never reads, flooded

{
    my $victim = IM::Client->new(port => port(9095), rcvbuf => 4096);
    is($victim->login('victim40001', 'pw'), 0, 'slow reader: logs in');
    my $s = IM::Client->new(port => port(9095), auto_pong => 1);
    is($s->login('flooder40002', 'pw'), 0, 'slow reader: the sender too');
    my $slow0 = status()->{slow_closed} // 0;
    $victim->ws->stop_reading;

    my $payload = 'v' x 30000;
    my (%pending, $acked, $answers);
    my ($k, $t0) = (0, time);
    my $gone = 0;
    # 24 MB at most: more than the kernel's socket buffers and 64k
    while ($k < 800 && time - $t0 < 40) {
        $pending{$s->publish(40001, $payload, raw => 1)} = 1;
        $k++;
        for my $m ($s->drain(0.005)) {
            $answers++;
            $acked++ if $m->{cmd} == PUB_ACK && delete $pending{$m->{msgid}};
        }
        sample();
        next if $k % 10;
        last if $gone = (status()->{slow_closed} // 0) > $slow0;
    }
    ok($gone, "slow reader: closed at im_send_buffer (after $k messages)");
    # every message is answered, the sender goes on
    my $deadline = time + 3 * $BOUND;
    while (%pending && time < $deadline) {
        my $m = $s->next(timeout => $deadline - time) or last;
        $answers++;
        $acked++ if $m->{cmd} == PUB_ACK && delete $pending{$m->{msgid}};
    }
    is(scalar keys %pending, 0, "slow reader: the sender got an ack for "
        . "each of its $k messages") or diag("answers: $answers");
    my $id = $s->publish(1001, 'after the flood');
    ok($s->expect(cmd => PUB_ACK, msgid => $id),
        'slow reader: the sender goes on');
    ok(!$s->is_closed, 'slow reader: the sender was not closed');
    $victim->ws->resume_reading;
    ok($victim->ws->wait_closed(3 * $BOUND),
        'slow reader: its connection is closed');
    ok(!$victim->ws->close_received, '... without a close frame (2)');
    $s->close(1000);
}
note('after the slow reader: ' . fmt_mem(mem()));

###############################################################################
# wrong passwords

{
    # the user-centre requests of this flood: [user, password]
    my $asked = sub {
        map { [$_->{params}{username}, $_->{params}{password}] }
            grep { ($_->{params}{password} // '') =~ /^guess/ }
            $uc->requests
    };
    my (@stay, %codes);
    my ($conns, $connects) = (0, 0);
    my $t0 = time;
    for my $wave (1 .. 20) {
        my $deadline = time + 3 * $BOUND;
        my @w = ws_many(100, $deadline);
        for my $c (@w) {
            my $k = $conns++;
            # half guess alice's and bob's passwords over and over (the
            # auth location's limit per user name), half a name each
            $c->{who} = $k % 2 ? ($k % 4 == 1 ? 'alice' : 'bob')
                : 'mallory' . (60000 + $k);
            # a CONNECT and another behind it: the second is dropped
            # with the refused login (3.1)
            sent($c, bin(connect_msg($c->{who}, "guess$k"))
                . bin(connect_msg($c->{who}, "guess$k+")));
            $connects += 2;
        }
        pump(\@w, sub { $_[0]{msgs} }, $deadline);
        for my $c (@w) {
            my $m = $c->{msgs} ? $c->{msgs}[0] : 'none';
            my $kind = $c->{who} =~ /^mallory/ ? 'own' : 'ab';
            $codes{$kind}{unpack 'H*', $m}++;
        }
        # most close at once, as clients should; five per wave stay
        push @stay, splice(@w, 0, 5);
        $_->{conn}->close for @w;
    }
    my $secs = time - $t0;
    my $codes = sub {
        my $h = $codes{$_[0]} // {};
        join ',', map { "$_:$h->{$_}" } sort keys %$h;
    };
    is($conns, 2000, 'wrong passwords: 2,000 connections upgraded');
    is($codes->('own'), '0203:1000', 'wrong passwords, a name each: '
        . 'both CONNECTs answered once, CONNECT_ACK 3');
    like($codes->('ab'), qr/^0202:\d+,0203:\d+$/, 'wrong passwords for '
        . 'alice and bob: both CONNECTs answered once, CONNECT_ACK 3 or, '
        . 'over the limit, 2');
    note(sprintf 'wrong passwords: %d CONNECTs on %d connections in %.1fs; '
        . 'a name each %s; alice and bob %s', $connects, $conns, $secs,
        $codes->('own'), $codes->('ab'));
    ok(pump(\@stay, \&closed, time + 1 + 3 * $BOUND),
        'wrong passwords: those that stayed are closed after im_close_grace');
    is(scalar(grep { ($_->{close} // -1) != 1000
        || @{$_->{msgs} // []} != 1 }
        @stay), 0, '... with close 1000 and nothing after the refusal');

    # the user centre: asked once per connection, but for alice and bob
    # only as often as limit_req lets through (burst 12, one per 10 s,
    # one login each before)
    my @own;
    wait_until(sub { (@own = grep { $_->[0] =~ /^mallory/ } $asked->())
        >= 1000 }, $BOUND);
    is(scalar @own, 1000,
        'wrong passwords, a name each: the user centre asked once for each');
    my @ab = grep { $_->[0] !~ /^mallory/ } $asked->();
    is(scalar @ab, $codes{ab}{'0203'} // 0,
        'alice and bob: the user centre asked once per CONNECT_ACK 3');
    cmp_ok(scalar @ab, '<=', 2 * (13 + 1 + int($secs / 10)),
        'alice and bob: ... no more often than the limit lets through');
}

###############################################################################
# hit and run: CONNECT and gone (reset or closed) while the user centre is
# asked; and too much sent before the CONNECT_ACK

{
    my $n = 0;
    for my $wave (1 .. 10) {
        my @w = ws_many(100, time + 3 * $BOUND);
        for my $c (@w) {
            my $k = $n++;
            sent($c, bin(connect_msg('runner' . (70000 + $k),
                $k % 3 ? 'pw' : 'wrong')));
            $k % 2 ? $c->{conn}->abort : $c->{conn}->close;
        }
    }
    is($n, 1000, 'hit and run: 1,000 CONNECTs left behind');

    # the user centre answers slowpoke after 2 s: all of it is sent before
    my @p = ws_many(10, time + 3 * $BOUND);
    for my $c (@p) {
        sent($c, bin(connect_msg('slowpoke', 'pw'))
            . join('', map { bin(ping_msg() . ('x' x 1000)) } 1 .. 70));
    }
    ok(pump(\@p, \&closed, time + 2 + 3 * $BOUND),
        'over 64 KiB before the CONNECT_ACK: closed');
    is(scalar(grep { ($_->{close} // -1) != 1008 || $_->{msgs} } @p), 0,
        '... with close 1008 and no answer (3.1)');
}

###############################################################################
# the chat, and the memory once all of it is over

close $stop_w;
{
    my $sel = IO::Select->new($res_r);
    my $line = $sel->can_read(90) ? <$res_r> : undef;
    waitpid($chat, 0);
    my $r = eval { decode_json($line // '') } // { fail => ['no result'] };
    is($r->{login}, '0,0', 'chat: alice and bob logged in');
    ok($r->{sent} > 100, "chat: $r->{sent} messages sent meanwhile");
    is($r->{acked}, $r->{sent}, 'chat: every one acked');
    is($r->{delivered}, $r->{sent}, 'chat: every one delivered');
    is(join('; ', @{$r->{fail} // []}), '', 'chat: no failure');
    is($r->{closed}, 0, 'chat: neither session was closed');
    note(sprintf 'chat: %d messages, the slowest round trip %.2fs',
        $r->{sent}, $r->{max_lat} // -1);
}

ok(wait_until(sub { (status()->{sessions} // -1) == 0 }, 3 * $BOUND),
    'no session left');
ok(wait_until(sub { active() <= $base_active }, 3 * $BOUND),
    'no connection left') or diag(active() . " > $base_active");
is(join(' ', $t->worker_pids), $wpid, 'the same worker throughout');

# the memory once it is all over: back near the baseline after the trim
{
    my $back;
    wait_until(sub { ($back = mem()->{Rss} - $base->{Rss}) < 1024 },
        2 + 2 * $BOUND);
    note('the end: ' . fmt_mem(mem()) . ", $back kB over the baseline; "
        . "the highest Rss seen $peak_rss kB");
    SKIP: {
        skip 'sanitizer build: freed memory stays in quarantine', 1
            if $Test::Nginx::SANITIZER;
        cmp_ok($back, '<', 4096,
            'the end: Rss within 4 MB of the baseline');
    }
}

$t->done_testing();
