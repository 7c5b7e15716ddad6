#!/usr/bin/perl
# A login storm against a busy Redis (issue 21 item 2, scaled to a test):
# 3,000 WebSocket logins sent at once over 2 workers while Redis stops
# for 1.5 s at a time (DEBUG SLEEP in a loop from another client), with
# im_redis_timeout 1s. A Redis that answers late is busy, not dead: no
# Redis connection is dropped (im_redis_reconnects_total stays 0), every
# login is answered and accepted, and messages sent meanwhile are all
# acked, none refused. The silences are seen (im_redis_pings_total > 0:
# the watchdog asked and was answered). IM_STORM_N overrides the number.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::WS;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf/;
use IO::Poll qw/POLLIN/;
use IO::Socket::INET;
use Errno qw/EAGAIN EWOULDBLOCK EINTR/;
use Time::HiRes qw/time sleep/;

my $N = $ENV{IM_STORM_N} // 3000;
my $SLEEP = 1.5;

my $t = Test::Nginx->new()->has(qw/http/);
my $redis = IM::Redis->new(t => $t,
    args => ['--enable-debug-command', 'local']);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n",
    workers => 2);
write_conf($t, redis => $redis, uc => $uc, stream => 0, workers => 2,
    listen => 'reuseport backlog=4096',
    events => 'worker_connections 4096;',
    # the logins wait for Redis far longer than usual: no timer of the
    # handshake or the auth request may end one first
    http => "client_header_timeout 300s;",
    auth => "proxy_read_timeout 300s; proxy_send_timeout 300s;",
    main => "worker_rlimit_nofile 8192;\nim_zone im 4m;\n"
          . "im_redis_timeout 1s;\nim_connect_timeout 300s;\n"
          . "im_ping_interval 300s;\nim_repush_interval 60s;");
$t->run();

sub metrics {
    my $r = http_get('/metrics', port => port(9095)) // '';
    my %m = $r =~ /^(im_\S+) (\S+)$/mg;
    return \%m;
}

# two pairs that talk through the storm
my @talk = map { IM::Client->new(port => port(9095), auto_pong => 1) } 1 .. 4;
is($talk[$_]->login('talker' . (900001 + $_), 'pw'), 0,
    'talker ' . ($_ + 1) . ' logs in') for 0 .. 3;

# Redis stops for $SLEEP s, then serves for 0.5 s, until told to end
my $stop = $t->testdir . '/busy.stop';
my $busy = fork // die "fork: $!\n";
if ($busy == 0) {
    my $r = IM::Redis->new(t => $t, port => $redis->port, no_start => 1);
    my $end = time + 120;
    while (!-e $stop && time < $end) {
        eval { $r->cmd('DEBUG', 'SLEEP', $SLEEP) };
        sleep 0.5;
    }
    require POSIX;
    POSIX::_exit(0);
}

# the storm: every connection opened, then every handshake with its
# CONNECT in one write, as fast as this process goes
my $t0 = time;
my (@s, %buf, %code);
for my $i (1 .. $N) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => port(9095), Proto => 'tcp') or last;
    push @s, $s;
}
is(scalar @s, $N, "$N connections opened");
for my $i (0 .. $#s) {
    my $key = join '', map { chr(65 + int rand 26) } 1 .. 22;
    my $req = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\nSec-WebSocket-Key: ${key}==\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n"
        . IM::WS::build_frame(opcode => 2,
            payload => connect_msg('storm' . (100000 + $i), 'pw'));
    syswrite($s[$i], $req) == length $req or die "write: $!\n";
    $s[$i]->blocking(0);
}
my $sent = time - $t0;

# the talkers send and ack through it
my ($acked, $refused, $talked) = (0, 0, 0);
my $poll = IO::Poll->new;
$poll->mask($_ => POLLIN) for @s;
my %idx = map { fileno($s[$_]) => $_ } 0 .. $#s;
my $deadline = time + 240;
my $next_talk = 0;
# until every login is answered and the talkers spoke through at least
# four of Redis's silences
while ((keys %code < @s || $talked < 40) && time < $deadline) {
    if ($talked < 40 && time >= $next_talk) {
        my $from = $talk[$talked % 2];
        my $id = $from->publish(900003 + $talked % 2, "t$talked");
        $talked++;
        $next_talk = time + 0.2;
        push @{$from->{_ids}}, $id;
    }
    $poll->poll(0.2);
    for my $h ($poll->handles(POLLIN)) {
        my $i = $idx{fileno $h};
        my $n = sysread($h, my $chunk, 4096);
        if (!defined $n) {
            next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            $code{$i} = "error $!";
        } elsif ($n == 0) {
            $code{$i} //= 'closed';
        } else {
            $buf{$i} .= $chunk;
            next unless $buf{$i} =~ /\A(.*?)\r\n\r\n/s;
            my $head = $1;
            if ($head !~ m{^HTTP/1\.1 101 }) {
                $code{$i} = "status $head";
            } else {
                my $rest = substr($buf{$i}, length($head) + 4);
                my ($f) = IM::WS::parse_frame($rest);
                next unless $f;
                my $m = decode_server($f->{payload});
                $code{$i} = $m && $m->{cmd} == CONNECT_ACK
                    ? $m->{code} : 'not a CONNECT_ACK';
            }
        }
        $poll->remove($h) if defined $code{$i};
    }
}
my $took = time - $t0;
open my $fh, '>', $stop or die "$stop: $!\n";
close $fh;
waitpid($busy, 0);

my %by;
$by{$code{$_} // 'no answer'}++ for 0 .. $#s;
is($by{0} // 0, $N, "every one of the $N logins answered and accepted")
    or diag(explain \%by);
diag(sprintf('%d connections in %.1f s, all answered after %.1f s',
    $N, $sent, $took));

# every message of the talkers acked, none refused
for my $k (0 .. 1) {
    my $from = $talk[$k];
    for my $id (@{$from->{_ids} // []}) {
        my $m = $from->expect(msgid => $id, timeout => 60);
        if ($m && $m->{cmd} == PUB_ACK) { $acked++ } else { $refused++ }
    }
}
is($acked, $talked, "the $talked messages sent during the storm were acked");
is($refused, 0, 'none was refused');

my $m = metrics();
is($m->{im_redis_reconnects_total}, 0, 'no Redis connection was dropped');
is($m->{im_redis_failed_total}, 0, 'no Redis command failed');
is($m->{'im_refused_total{reason="store"}'}, 0, 'no message refused for Redis');
ok(($m->{im_redis_pings_total} // 0) > 0,
    'the silences were noticed and a PING answered');
diag("pings: " . ($m->{im_redis_pings_total} // 'none'));
is($m->{'im_sessions{transport="ws"}'}, $N + 4, 'every session is there');

# one SUBSCRIBE per event-loop pass, not one per login: how many logins
# end in one pass depends on the machine's load (3 on average in a busy
# full suite, more alone), never one each for 3,000 at once
sub subscribe_calls {
    my ($n) = ($redis->cmd('INFO', 'commandstats') // '')
        =~ /cmdstat_subscribe:calls=(\d+)/;
    return $n // 0;
}
my $calls = subscribe_calls();
ok($calls < $N, "the storm's $N subscriptions took $calls SUBSCRIBEs");

# the subscriber connections cut: each worker subscribes its ~1,500 uids
# again, 1,024 channels a command, the next once the last is confirmed
my $mark = $t->log_mark;
sub channels {
    my $r = $redis->cmd('PUBSUB', 'CHANNELS', 'im:u:*');
    return ref $r eq 'ARRAY' ? scalar @$r : -1;
}
is(channels(), $N + 4, 'every uid has its channel');
$redis->cmd('CLIENT', 'KILL', 'TYPE', 'pubsub');
ok(wait_until(sub {
    my @back = $t->error_log($mark)
        =~ /pub\/sub back, \d+ uids to subscribe again, 1024 at a time/g;
    @back == 2 && channels() == $N + 4;
}, 60), 'both workers subscribed every uid again');
my $again = subscribe_calls() - $calls;
ok($again >= 2 && $again <= 6, "in $again SUBSCRIBEs of up to 1,024");
is(metrics()->{im_redis_reconnects_total}, 2,
    'the two subscriber connections were the only ones to go');

# and the storm's sessions are live: one of them gets a message
my $last = $N - 1;
my $to = 100000 + $last;
my $id = $talk[0]->publish($to, 'after the storm');
ok($talk[0]->expect(cmd => PUB_ACK, msgid => $id), 'a message to storm'
    . " user $to is acked");
ok(wait_until(sub {
    my $n = sysread($s[$last], my $chunk, 65536);
    $buf{$last} .= $chunk if $n;
    index($buf{$last}, 'after the storm') >= 0;
}, 30), 'and reaches it');

close $_ for @s;
$t->done_testing;
