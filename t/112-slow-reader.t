#!/usr/bin/perl
# A client that never reads (docs/PROTOCOL.md 3, issue 3 item 1) over ws and
# wss: with im_send_buffer 64k, a recipient that stops reading while
# messages pour in is closed by the server instead of being buffered
# without bound; the sender and another recipient are unaffected; every
# message acked to the sender reaches the recipient after its next login,
# even when that backlog is larger than im_send_buffer (a client that
# reads is not a slow reader).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port http_get/;
use Time::HiRes qw/time sleep/;
use JSON::PP;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
write_conf($t, redis => $redis, uc => $uc,
    main => "im_send_buffer 64k;\nim_repush_interval 30s;\nim_offline_max 5000;");
$t->run();

sub status {
    my $r = http_get('/status', port => port(9095)) // '';
    my ($body) = $r =~ /\r\n\r\n(.*)\z/s;
    return eval { decode_json($body // '') } // {};
}

my $base = 11000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);
    my ($rid, $qid) = ($base + 1, $base + 2);

    my $r = IM::Client->new(%o, rcvbuf => 4096);
    is($r->login("u$rid", 'pw'), 0, "$name: the slow reader logs in");
    my $q = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($q->login("u$qid", 'pw'), 0, "$name: another recipient logs in");
    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login("s$base", 'pw'), 0, "$name: sender logs in");
    my $slow0 = status()->{slow_closed} // 0;

    $r->ws->stop_reading;
    my $payload = "p" x 30000;
    my (%acked, @sent);
    my $t0 = time;
    my $k = 0;
    # 18 MB at most: more than the kernel's socket buffers (tcp_wmem 4 MB) plus 64k
    while ($k < 600 && time - $t0 < 20) {
        push @sent, $s->publish($rid, $payload, raw => 1);
        $k++;
        next if $k % 5;
        for my $m ($s->drain(0.01)) {
            $acked{$m->{msgid}} = 1 if $m->{cmd} == PUB_ACK;
        }
        # probe the slow reader's socket without reading data: a closed
        # server side shows as an error/EOF only after the data, so ask the
        # server instead
        last if (status()->{slow_closed} // 0) > $slow0;
    }
    my $flood = time - $t0;
    for my $m ($s->drain(1)) {
        $acked{$m->{msgid}} = 1 if $m->{cmd} == PUB_ACK;
    }
    ok((status()->{slow_closed} // 0) > $slow0,
        "$name: the server gave up on the slow reader (slow_closed) after $k messages")
        or diag(sprintf 'flooded %.1fs', $flood);

    # the other recipient and the sender work on
    my $id = $s->publish($qid, 'meanwhile');
    ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: the sender still gets acks");
    ok($q->expect(cmd => PUBLISH, msgid => $id), "$name: the other recipient still receives");
    ok(!$s->is_closed && !$q->is_closed, "$name: neither was closed");

    # the slow reader, reading again, finds the connection closed
    $r->ws->resume_reading;
    my $deadline = time + 5;
    1 while time < $deadline && $r->next(timeout => $deadline - time);
    ok($r->is_closed, "$name: the slow reader's connection was closed by the server");

    # nothing acked to the sender is lost: the next login gets every one
    my $r2 = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($r2->login("u$rid", 'pw'), 0, "$name: the slow reader logs in again");
    my %got;
    $deadline = time + 15;
    while (time < $deadline && grep { !$got{$_} } keys %acked) {
        my $m = $r2->next(timeout => $deadline - time) or last;
        $got{$m->{msgid}} = 1 if $m->{cmd} == PUBLISH;
    }
    my @lost = grep { !$got{$_} } keys %acked;
    ok(scalar(keys %acked) > 0, "$name: (" . scalar(keys %acked) . " messages acked to the sender)");
    {
        is(scalar @lost, 0, "$name: every acked message reaches the next login");
    }
    $r2->close(1000);

    # -- a backlog bigger than im_send_buffer, for a client that reads
    my $bid = $base + 3;
    my @ids;
    for my $k (1 .. 10) {
        push @ids, $s->publish($bid, "b$k" . ('.' x 30000), raw => 1);
        $s->expect(cmd => PUB_ACK, msgid => $ids[-1]);
    }
    my $b = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($b->login("u$bid", 'pw'), 0, "$name: a reader with a 300 KB backlog logs in");
    my @p;
    $deadline = time + 8;
    while (@p < 10 and my $m = $b->next(timeout => $deadline - time)) {
        push @p, $m->{msgid} if $m->{cmd} == PUBLISH;
    }
    {
        is(join(' ', @p), join(' ', @ids), "$name: the 10 stored 30 KB messages all arrive, in order");
        ok(!$b->is_closed, "$name: ... and the reading client is not closed");
    }
    $_->close(1000) for $b, $q, $s;
}, serial => 1);    # slow_closed is one counter for both

$t->done_testing();
