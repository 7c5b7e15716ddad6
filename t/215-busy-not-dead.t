#!/usr/bin/perl
# A worker that is behind does not close its live clients (decision 042).
# The worker is made to fall behind on purpose: SIGSTOP for longer than
# im_ping_timeout (and than im_repush_interval), while the client sends 3 MB
# that the server reads and ignores (acks of no push, 100 KB each) and only
# then its answer (PING_RESP, or the ack of its push). After SIGCONT the
# worker reads 1 MB in the first pass (16 reads of 64 KB) and runs its timers
# before the rest: the answer is still unread in the socket when the
# heartbeat's and the re-push's deadlines are looked at. The listen socket's
# rcvbuf (4 MB) lets the whole of it wait in the socket.
#   1. heartbeat: the client answers the PING behind the flood; the session
#      must not end with "ping timeout".
#   2. re-push (im_repush_max 0: the first deadline closes): the client acks
#      behind the flood; the session must not end with "re-push limit".
#   3. a push whose bytes have not left: the client's receive buffer and the
#      server's send buffer are small (4 KB), the client reads nothing for 2
#      s after a 30 KB push is queued to it; the push's re-push clock starts
#      when its bytes have left, so its 1 s deadline has not passed when the
#      client reads it and acks.
# A client that really is dead is still closed: t/104-repush.t and
# t/109-heartbeat.t.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use Time::HiRes qw/time sleep/;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/standard/;

my ($t, $redis, $uc) = standard(stream => 0,
    listen => 'rcvbuf=4m sndbuf=4k',
    users => "alice alice-secret 1001\nbob bob-secret 1002\n"
        . "carol carol-secret 1003\ndave dave-secret 1004\n",
    main => "im_ping_interval 3s;\nim_ping_timeout 1s;\n"
        . "im_repush_interval 1s;\nim_repush_max 0;\nim_close_grace 1s;");

my ($worker) = $t->worker_pids;
ok($worker, "the worker's pid ($worker)");

my $junk = 'j' x (100 * 1024);

# 30 acks of no push, 100 KB each: read and ignored (docs/PROTOCOL.md 3.4)
sub flood {
    my ($c) = @_;
    my $ok = 1;
    for my $i (1 .. 30) {
        $ok &&= $c->send(pub_ack(msgid("flood$i")) . $junk);
    }
    return $ok;
}

# the worker stopped for $secs while $code writes to the socket
sub behind {
    my ($secs, $code) = @_;
    kill 'STOP', $worker or die "SIGSTOP $worker: $!\n";
    my $t0 = time;
    my $ok = eval { $code->() };
    my $err = $@;
    my $left = $secs - (time - $t0);
    sleep $left if $left > 0;
    kill 'CONT', $worker;
    die $err if $err;
    return $ok;
}

sub metric {
    my ($name) = @_;
    my $body = http_get('/metrics', port => port(9095)) // '';
    return $body =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

sub session_end {
    my ($uid) = @_;
    my $log = $t->error_log;
    return $log =~ /uid $uid client \d+ session end: ([^,]+),/ ? $1 : undef;
}

# -- 1. heartbeat
{
    my $a = IM::Client->new(port => port(9095), sndbuf => 4 * 1024 * 1024);
    is($a->login('alice', 'alice-secret'), 0, 'heartbeat: alice logs in');

    my $ping = $a->expect(cmd => PING, timeout => 10);
    ok($ping, 'heartbeat: the server PINGs');

    # behind for 2.5 s: the PING_RESP waits behind 3 MB when the 1 s
    # timeout is looked at
    ok(behind(2.5, sub { flood($a) && $a->ping_resp }),
        'heartbeat: 3 MB, then PING_RESP, written while the worker stops');

    # a round trip: the PING_RESP of our own PING comes back only if the
    # session lives (a closed one sends DISCONNECT and its close frame)
    $a->auto_pong(1);
    $a->ping;
    my $m = $a->expect(cmd => PING_RESP, timeout => 30);
    ok($m, 'heartbeat: the session lives on: our PING is answered');
    ok(!grep({ $_->{cmd} == DISCONNECT } $a->pending),
        'heartbeat: no DISCONNECT');
    ok(!$a->is_closed, 'heartbeat: the connection is open');
    is(session_end(1001), undef, 'heartbeat: no session end logged');
    ok((metric('im_busy_spared_total') // 0) >= 1,
        'heartbeat: counted in im_busy_spared_total');
    $a->disconnect;
}

# -- 2. re-push
{
    my $b = IM::Client->new(port => port(9095), auto_pong => 1,
        sndbuf => 4 * 1024 * 1024);
    is($b->login('bob', 'bob-secret'), 0, 're-push: bob logs in');
    my $c = IM::Client->new(port => port(9095), auto_pong => 1);
    is($c->login('carol', 'carol-secret'), 0, 're-push: carol logs in');

    my $id = $c->publish(1002, 'to bob');
    ok($c->expect(cmd => PUB_ACK, msgid => $id), 're-push: carol is acked');
    $c->disconnect;

    my $push = $b->expect(cmd => PUBLISH, msgid => $id);
    ok($push, 're-push: bob gets the push (not acked yet)');

    # behind for 2.5 s: the ack waits behind 3 MB when the push's 1 s
    # deadline is looked at (im_repush_max 0: it would close)
    ok(behind(2.5, sub { flood($b) && $b->ack($id) }),
        're-push: 3 MB, then the ack, written while the worker stops');

    $b->ping;
    my $m = $b->expect(cmd => PING_RESP, timeout => 30);
    ok($m, 're-push: the session lives on: our PING is answered');
    ok(!grep({ $_->{cmd} == DISCONNECT } $b->pending), 're-push: no DISCONNECT');
    is(session_end(1002), undef, 're-push: no session end logged');
    is(metric('im_repushes_total'), 0, 're-push: nothing was pushed again');

    # the ack counted: bob's next login gets nothing from the inbox
    $b->disconnect;
    ok(wait_until(sub { defined session_end(1002) }, 20),
        're-push: bob leaves');
    is(session_end(1002), 'logout', 're-push: ... by his DISCONNECT');
    my $b2 = IM::Client->new(port => port(9095), auto_pong => 1);
    is($b2->login('bob', 'bob-secret'), 0, 're-push: bob logs in again');
    ok($b2->nothing_for(1), 're-push: the acked message is not pushed again');
    $b2->disconnect;
}

# -- 3. the re-push clock starts when the bytes left
{
    my $d = IM::Client->new(port => port(9095), rcvbuf => 4096, uid => 1004);
    is($d->login('dave', 'dave-secret'), 0, 'bytes left: dave logs in');
    my $c = IM::Client->new(port => port(9095), auto_pong => 1, uid => 1003);
    is($c->login('carol', 'carol-secret'), 0, 'bytes left: carol logs in');

    # just after a PING is answered: the next one is 3 s away
    ok($d->expect(cmd => PING, timeout => 10), 'bytes left: dave is PINGed');
    $d->ping_resp;

    my $id = $c->publish(1004, 'x' x 30000);
    ok($c->expect(cmd => PUB_ACK, msgid => $id), 'bytes left: carol is acked');
    # the push is queued; most of its 30 KB cannot leave while dave does
    # not read; its deadline (1 s, im_repush_max 0) would have closed
    sleep 2;

    $d->auto_pong(1);
    my $m = $d->expect(cmd => PUBLISH, msgid => $id);
    ok($m && length($m->{payload} // '') > 30000,
        'bytes left: dave reads the push');
    $d->ack($id);
    $d->ping;
    ok($d->expect(cmd => PING_RESP, timeout => 30),
        'bytes left: the session lives on: our PING is answered');
    ok(!grep({ $_->{cmd} == DISCONNECT } $d->pending),
        'bytes left: no DISCONNECT');
    is(session_end(1004), undef, 'bytes left: no session end logged');
    is(metric('im_repushes_total'), 0, 'bytes left: nothing was pushed again');
    $_->disconnect for $d, $c;
}

done_testing();
