#!/usr/bin/perl
# "Alone" (src/ngx_im_alone.c, top comment): a uid whose channel PUBLISH
# reaches only this worker's own subscription is marked alone, and later
# messages for it skip the channel; a worker subscribing elsewhere announces
# itself ('J'), and the alone worker then asks for an inbox reload ('S'),
# so a newcomer gets every skipped message. Two nginx nodes (a, b; one
# worker each) share one redis-server and one user centre.
#
#   - skip: sender and receiver on a, 20 messages: all delivered in order,
#     a's /status "channel_skipped" grows by >= 15, Redis PUBLISH calls
#     (INFO commandstats) by < 10; in write_through and offline_only;
#   - newcomer: the receiver logs in on b too (another ClientId): 20 more
#     reach both sessions, and a publishes on the channel again; and, in
#     4 rounds with other uids, a burst sent right behind b's CONNECT_ACK
#     (a may not have heard b's 'J' yet; a's session acks at once) reaches
#     both;
#   - back to alone: once b's session left, a skips the channel again
#     within 5 messages;
#   - the race (write_through): the receiver on a does not ack; a stream of
#     300 messages is in flight while it logs in on b, which must get every
#     one of them (3 rounds, the login at a different point of the stream);
#   - kick across nodes: the same ClientId logs in on b while alone on a:
#     a's session gets LOGOUT, b gets the next 10 (and, in write_through,
#     one that a had pushed but not acked);
#   - a's pub/sub connection killed (CLIENT KILL TYPE pubsub), the receiver
#     logs in on b at once: b gets the next 10 while a reconnects, and more
#     once it has;
#   - b's inbox connection killed right before the receiver logs in there
#     (write_through): b's 'J' cannot be published, yet once b is back on
#     Redis the next 10 must reach b (a must not stay alone);
#   - acked early (write_through): 10 messages skipped on a and acked
#     there, an 11th not acked, then the receiver logs in on b: b gets the
#     11th, from the inbox, and not the 10 another device acked before its
#     login (nor does a second device on a);
#   - reload (write_through): messages acked right before a reload leave
#     the inbox.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login firsts status/;
use Time::HiRes qw/time sleep/;

my %TIMERS = (
    # quiet pings: a client the test does not read for a while cannot answer
    # a PING, and a loaded machine can make that "while" longer than
    # interval + timeout; no check here is about pings
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    # the race's receiver on a does not ack for a while: no re-push closes it
    im_repush_interval => '5s',
    im_repush_max      => '5',
    im_close_grace     => '1s',
);

# one node (IM::Cluster::node), one worker, /status there
sub node {
    my (%o) = @_;
    return IM::Cluster::node(%o, workers => 1, status => 1,
        delivery => $o{mode}, timers => \%TIMERS);
}

###############################################################################

my $t0 = Test::Nginx->new()->has(qw/http redis/);    # holds the helpers
my $TO = $Test::Nginx::TIMEOUT;    # bound of a wait for messages that must come
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");

# PUBLISH commands Redis has run so far
sub publishes {
    my $info = $redis->cmd(INFO => 'commandstats') // '';
    return $info =~ /^cmdstat_publish:calls=(\d+)/m ? $1 : 0;
}

# the "channel_skipped" counter of a node's (only) worker
sub skipped {
    my ($t) = @_;
    return status($t->{im_port})->{channel_skipped} // -1;
}

# subscribers of uid's channel, as Redis counts them
sub numsub {
    my ($uid) = @_;
    my $r = $redis->cmd(PUBSUB => 'NUMSUB', "im:u:$uid");
    return $r->[1] // 0;
}

# Redis clients in pub/sub mode (subscribed to something)
sub pubsub_clients {
    my $list = $redis->cmd(CLIENT => 'LIST') // '';
    return scalar grep { /\bsub=[1-9]/ || /\bpsub=[1-9]/ } split /\n/, $list;
}

# Redis's clients: id => { field => value } (CLIENT LIST)
sub clients {
    my %c;
    for my $l (split /\n/, $redis->cmd(CLIENT => 'LIST') // '') {
        my %f = map { split /=/, $_, 2 } split / /, $l;
        $c{$f{id}} = \%f if defined $f{id};
    }
    return \%c;
}

# the local ports of process $pid's connections to our Redis
sub redis_ports_of {
    my ($pid) = @_;
    my (%inode, %ports);
    for my $fd (glob "/proc/$pid/fd/*") {
        my $l = readlink($fd) // next;
        $inode{$1} = 1 if $l =~ /^socket:\[(\d+)\]/;
    }
    open my $fh, '<', '/proc/net/tcp' or return \%ports;
    while (<$fh>) {
        my @f = split;
        next unless @f > 9 && $inode{$f[9]};
        my ($l, $r) = map { /:([0-9A-F]+)$/ ? hex $1 : 0 } @f[1, 2];
        $ports{$l} = 1 if $r == $redis->port;
    }
    return \%ports;
}

sub wait_numsub {
    my ($uid, $n) = @_;
    return wait_until(sub { numsub($uid) == $n });
}

# $n messages from $s to $to, each acked before the next; the MsgIds of
# the acked ones
sub send_acked {
    my ($s, $to, $n, $tag) = @_;
    my @ids;
    for my $i (1 .. $n) {
        my $id = $s->publish($to, "$tag $i");
        push @ids, $id if $s->expect(cmd => PUB_ACK, msgid => $id);
    }
    return @ids;
}

# the MsgIds of $want that $c has not got (first arrivals; duplicates are
# fine) within $timeout seconds in all; returns (missing, first-arrival
# order of the wanted ones)
sub receive_all {
    my ($c, $want, $timeout) = @_;
    my %left = map { $_ => 1 } @$want;
    my (@order, %seen);
    my $deadline = time + $timeout;
    while (%left and my $m = $c->expect(cmd => PUBLISH,
        timeout => $deadline - time))
    {
        next if $seen{$m->{msgid}}++;
        push @order, $m->{msgid} if delete $left{$m->{msgid}};
    }
    my @missing = grep { $left{$_} } @$want;
    return (\@missing, \@order);
}

# the places of @$missing in @$ids (1-based), for diagnostics
sub places {
    my ($ids, $missing) = @_;
    my %m = map { $_ => 1 } @$missing;
    my @p = grep { $m{$ids->[$_ - 1]} } 1 .. @$ids;
    return @p > 20 ? join(' ', @p[0 .. 19], '...') : join(' ', @p);
}

sub log_lines {
    my ($t, $mark, $re) = @_;
    return join '', grep { /$re/ } split /^/m, $t->error_log($mark);
}

###############################################################################

my $port = 9111;
for my $mode (qw/write_through offline_only/) {
    my $wt = $mode eq 'write_through';
    my $base = $wt ? 2100 : 2600;
    my $a = node(name => 'a', port => $port++, redis => $redis, uc => $uc,
        mode => $mode);
    my $b = node(name => 'b', port => $port++, redis => $redis, uc => $uc,
        mode => $mode);
    $a->run();
    $b->run();
    my ($amark, $bmark) = ($a->log_mark, $b->log_mark);

    my $S = $base;
    my ($s, $scode) = login($a, $S);
    is($scode, 0, "$mode: sender u$S logs in on a");

    # -- skip: sender and receiver on a
    my $U = $base + 1;
    my ($ua, $ucode) = login($a, $U);
    is($ucode, 0, "$mode: u$U logs in on a");
    ok(wait_numsub($U, 1), "$mode: a subscribed to u${U}'s channel");
    {
        my ($p0, $k0) = (publishes(), skipped($a));
        my @ids = send_acked($s, $U, 20, 'skip');
        is(scalar @ids, 20, "$mode skip: 20 messages acked");
        is_deeply([firsts($ua, 20)], \@ids,
            "$mode skip: u$U on a gets all 20, in order");
        sleep 0.1;
        my ($p1, $k1) = (publishes(), skipped($a));
        cmp_ok($k1 - $k0, '>=', 15,
            "$mode skip: channel_skipped grew by >= 15 (by " . ($k1 - $k0) . ')');
        cmp_ok($p1 - $p0, '<', 10,
            "$mode skip: fewer than 10 PUBLISH for 20 messages (" . ($p1 - $p0) . ')');
    }

    # -- newcomer: u$U on b too, with ClientId 2
    {
        my ($ub, $code) = login($b, $U, client_id => 2);
        is($code, 0, "$mode newcomer: u$U (ClientId 2) logs in on b");
        my ($p0, $k0) = (publishes(), skipped($a));
        my @ids = send_acked($s, $U, 20, 'newcomer');
        is(scalar @ids, 20, "$mode newcomer: 20 messages acked");
        my ($miss_b, $order_b) = receive_all($ub, \@ids, $TO);
        is_deeply($order_b, \@ids, "$mode newcomer: u$U on b gets all 20, "
            . 'in order') or diag('missing on b: ' . places(\@ids, $miss_b));
        my (undef, $order_a) = receive_all($ua, \@ids, $TO);
        is_deeply($order_a, \@ids, "$mode newcomer: u$U on a too");
        sleep 0.1;
        my ($p1, $k1) = (publishes(), skipped($a));
        cmp_ok($p1 - $p0, '>=', 15, "$mode newcomer: a publishes on the "
            . 'channel again (' . ($p1 - $p0) . ' PUBLISH for 20, '
            . 'channel_skipped +' . ($k1 - $k0) . ')');
        ok(!grep({ $_->{cmd} == LOGOUT } $ua->drain(0.2)),
            "$mode newcomer: no LOGOUT on a for another ClientId");

        # -- back to alone: b's session leaves
        $ub->disconnect;
        ok($ub->wait_closed(3), "$mode alone again: b's session ends");
        ok(wait_numsub($U, 1), "$mode alone again: one subscriber left");
        my $k2 = skipped($a);
        my @ids2 = send_acked($s, $U, 5, 'alone again');
        my (undef, $order2) = receive_all($ua, \@ids2, $TO);
        is_deeply($order2, \@ids2, "$mode alone again: u$U on a gets the next 5");
        cmp_ok(skipped($a) - $k2, '>=', 1,
            "$mode alone again: channel_skipped grows within 5 messages");
        $ua->disconnect;
    }

    # -- newcomer, closer: a burst leaves right behind b's CONNECT_ACK, while
    # a may not have heard b's 'J' yet, and the session on a acks what it
    # gets at once (a few rounds: the timing varies)
    for my $round (1 .. 4) {
        my $V = $base + 40 + $round;
        my $name = "$mode burst $round";
        my ($va, $code) = login($a, $V);
        is($code, 0, "$name: u$V logs in on a");
        wait_numsub($V, 1);
        my $k = skipped($a);
        for (1 .. 5) {
            send_acked($s, $V, 1, "$name warm-up");
            last if skipped($a) > $k;
        }
        ok(skipped($a) > $k, "$name: u$V alone on a");

        my $vb = IM::Client->new(port => $b->{im_port}, auto_pong => 1,
            auto_ack => 1, uid => $V);
        my $k0 = skipped($a);
        my $code2 = $vb->login("u$V", 'pw', client_id => 2);
        my @ids = map { $s->publish($V, "$name $_") } 1 .. 20;
        is($code2, 0, "$name: u$V (ClientId 2) logs in on b");
        is(scalar(grep { $s->expect(cmd => PUB_ACK, msgid => $_) } @ids), 20,
            "$name: 20 sent right after b's CONNECT_ACK, acked");
        # a acks as it reads, as a device does
        my (undef, $order_a) = receive_all($va, \@ids, $TO);
        is_deeply($order_a, \@ids, "$name: a gets all 20, in order");
        my ($miss, $order) = receive_all($vb, \@ids, $TO);
        is_deeply($order, \@ids, "$name: b gets all 20, in order (a skipped "
            . (skipped($a) - $k0) . ')')
            or diag('missing on b: ' . places(\@ids, $miss));
        $vb->disconnect;
        $va->disconnect;
    }

    # -- acked before the newcomer logged in (write_through): 10 messages
    # skipped on a and acked there, an 11th pushed and not acked; a
    # newcomer on b gets the 11th from the inbox, and the 10 are not given
    # to it (a does not replay what it skipped: the newcomer's CONNECT_ACK
    # waits until a publishes on the channel), nor to a second device on a
    if ($wt) {
        my $W = $base + 60;
        my ($wa, $code) = login($a, $W, auto_ack => 0);
        is($code, 0, "acked early: u$W logs in on a (acking by hand)");
        wait_numsub($W, 1);
        my $k0 = skipped($a);
        for (1 .. 5) {
            $wa->ack($_) for send_acked($s, $W, 1, 'acked early, warm-up');
            last if skipped($a) > $k0;
        }
        $wa->drain(0.1);
        ok(skipped($a) > $k0, "acked early: u$W alone on a");

        my @want;
        for my $i (1 .. 11) {
            my ($id) = send_acked($s, $W, 1, "acked early $i");
            my $m = $id && $wa->expect(cmd => PUBLISH, msgid => $id);
            push @want, $id if $m;
            $wa->ack($id) if $m && $i <= 10;
        }
        is(scalar @want, 11, 'acked early: 11 sent and pushed to a, 10 acked');
        my $inbox = "im:inbox:$W";
        # (once a has read the acks)
        wait_until(sub { ($redis->cmd(LLEN => $inbox) // -1) <= 1 });
        is($redis->cmd(LLEN => $inbox), 1, 'acked early: the inbox holds '
            . 'the 11th only');

        my ($wb, $code2) = login($b, $W, client_id => 2);
        is($code2, 0, "acked early: u$W (ClientId 2) logs in on b");
        my $m = $wb->expect(cmd => PUBLISH);
        is($m && $m->{msgid}, $want[10], 'acked early: b gets the 11th');
        my %acked = map { $_ => 1 } @want[0 .. 9];
        my @given = grep { $acked{$_->{msgid}} }
            grep { $_->{cmd} == PUBLISH } $wb->drain(0.3);
        is(scalar @given, 0, 'acked early: b is not given the 10 acked '
            . 'before its login');

        my ($wc, $code3) = login($a, $W, client_id => 3);
        is($code3, 0, "acked early: u$W (ClientId 3) logs in on a");
        my @again = grep { $acked{$_->{msgid}} }
            grep { $_->{cmd} == PUBLISH } $wc->drain(0.3);
        is(scalar @again, 0, 'acked early: the second device on a is not '
            . 'given the 10 acked ones');
        ok(wait_until(sub { ($redis->cmd(LLEN => $inbox) // -1) == 0 }, 3),
            'acked early: the inbox empties');
        $_->disconnect for $wa, $wb, $wc;
    }

    # -- the race: a stream to u$U2 (on a, not acking) while it logs in on b
    if ($wt) {
        for my $round (1 .. 3) {
            my $U2 = $base + 10 + $round;
            my $name = "race $round";
            my ($ra, $code) = login($a, $U2, auto_ack => 0);
            is($code, 0, "$name: u$U2 logs in on a (not acking)");
            wait_numsub($U2, 1);

            # alone first: a few until a skips the channel
            my $k0 = skipped($a);
            my @ids;
            for (1 .. 5) {
                push @ids, send_acked($s, $U2, 1, "$name warm-up");
                last if skipped($a) > $k0;
            }
            ok(skipped($a) > $k0, "$name: u$U2 alone on a before the stream");

            # b's connection is ready; its CONNECT leaves in the middle of
            # the stream, at a different point each round
            my $rb = IM::Client->new(port => $b->{im_port}, auto_pong => 1,
                auto_ack => 1, uid => $U2);
            my $at = (40, 120, 200)[$round - 1];
            my ($p0, $k1) = (publishes(), skipped($a));
            my $n = 300;
            for my $i (1 .. $n) {
                push @ids, $s->publish($U2, "$name $i");
                $rb->send(connect_msg("u$U2", 'pw', client_id => 2))
                    if $i == $at;
                sleep 0.002 if $i % 3 == 0;
            }
            my $acked = grep { $s->expect(cmd => PUB_ACK, msgid => $_) }
                @ids[-$n .. -1];
            is($acked, $n, "$name: the $n messages of the stream acked");
            my $ack = $rb->expect(cmd => CONNECT_ACK);
            is($ack && $ack->{code}, 0, "$name: u$U2 (ClientId 2) logged in on b "
                . "during the stream");
            my ($miss) = receive_all($rb, \@ids, 10);
            is(scalar @$miss, 0, "$name: b got every one of " . scalar(@ids)
                . ' messages') or diag('missing on b (' . scalar(@$miss)
                . '): ' . places(\@ids, $miss) . "\nnode a:\n"
                . log_lines($a, $amark, qr/\[(?:info|warn|error)\]/)
                . "node b:\n"
                . log_lines($b, $bmark, qr/\[(?:info|warn|error)\]/));
            my ($p1, $k2) = (publishes(), skipped($a));
            # the login fell inside the stream: a skipped part of it and
            # published the rest
            ok($k2 > $k1 && $p1 - $p0 >= 20, "$name: the stream was partly "
                . 'skipped, partly published (channel_skipped +'
                . ($k2 - $k1) . ', ' . ($p1 - $p0) . ' PUBLISH)');
            $rb->disconnect;
            $ra->close;
            $rb->wait_closed(2);
        }
    }

    # -- kick across nodes: u$U3 alone on a, the same ClientId on b
    {
        my $U3 = $base + 20;
        my ($ka, $code) = login($a, $U3, auto_ack => 0);
        is($code, 0, "$mode kick: u$U3 logs in on a");
        wait_numsub($U3, 1);
        my $k0 = skipped($a);
        my @pre = send_acked($s, $U3, 3, 'kick, before');
        my @got = firsts($ka, 3);
        is_deeply(\@got, \@pre, "$mode kick: u$U3 on a gets 3");
        $ka->ack($_) for @pre[0, 1];    # the last one stays unacked
        ok(skipped($a) > $k0, "$mode kick: u$U3 alone on a");
        my ($kb, $code2) = login($b, $U3);
        is($code2, 0, "$mode kick: u$U3 (same ClientId) logs in on b");
        ok($ka->expect(cmd => LOGOUT), "$mode kick: the session on a gets LOGOUT");
        ok($ka->wait_closed(4), "$mode kick: a closes the kicked session");
        my @ids = send_acked($s, $U3, 10, 'kick, after');
        my @want = $wt ? ($pre[2], @ids) : @ids;
        my ($miss, $order) = receive_all($kb, \@want, $TO);
        is(scalar @$miss, 0, "$mode kick: b gets all 10"
            . ($wt ? ' and the one a had not acked' : ''))
            or diag('missing on b: ' . places(\@want, $miss));
        is_deeply($order, \@want, "$mode kick: in order") unless @$miss;
        $kb->disconnect;
    }

    # -- a's pub/sub connection is killed, u$U4 logs in on b at once
    {
        my $U4 = $base + 30;
        my ($ca, $code) = login($a, $U4);
        is($code, 0, "$mode sub lost: u$U4 logs in on a");
        wait_numsub($U4, 1);
        my $k0 = skipped($a);
        my @pre = send_acked($s, $U4, 3, 'sub lost, before');
        is_deeply([firsts($ca, 3)], \@pre, "$mode sub lost: u$U4 on a gets 3");
        ok(skipped($a) > $k0, "$mode sub lost: u$U4 alone on a");

        # b holds nobody now: only a's connection is in pub/sub mode
        ok(wait_until(sub { pubsub_clients() == 1 }, 5),
            "$mode sub lost: only a's connection is in pub/sub mode");
        my $mark = $a->log_mark;
        my $killed = $redis->cmd(CLIENT => 'KILL', TYPE => 'pubsub');
        my ($cb, $code2) = login($b, $U4, client_id => 2);
        is($killed, 1, "$mode sub lost: a's pub/sub connection killed");
        is($code2, 0, "$mode sub lost: u$U4 (ClientId 2) logs in on b");
        my @ids = send_acked($s, $U4, 10, 'sub lost, after');
        is(scalar @ids, 10, "$mode sub lost: 10 messages acked");
        my ($miss) = receive_all($cb, \@ids, 1 + $TO);
        is(scalar @$miss, 0, "$mode sub lost: b gets all 10")
            or diag('missing on b: ' . places(\@ids, $miss) . "\nnode a:\n"
                . log_lines($a, $mark, qr/\[(?:info|warn|error)\]/));
        is_deeply([firsts($ca, 10)], \@ids, "$mode sub lost: a gets all 10");

        # a is back on pub/sub: both still get everything
        ok($a->wait_for_log(qr/im redis: connection 2 ready/, from => $mark),
            "$mode sub lost: a's pub/sub connection is back");
        ok(wait_numsub($U4, 2), "$mode sub lost: both nodes subscribed again");
        my @ids2 = send_acked($s, $U4, 5, 'sub lost, back');
        my ($miss2) = receive_all($cb, \@ids2, $TO);
        is(scalar @$miss2, 0, "$mode sub lost: b gets the next 5 too");
        my ($miss3) = receive_all($ca, \@ids2, $TO);
        is(scalar @$miss3, 0, "$mode sub lost: and a");
        $ca->disconnect;
        $cb->disconnect;
    }

    # -- b's inbox connection is lost just as u$U5 subscribes there: b's
    # 'J' cannot leave then; once b is back on Redis, a must not keep
    # skipping the channel of a uid b holds
    if ($wt) {
        my ($U5, $X) = ($base + 50, $base + 51);
        my ($ea, $code) = login($a, $U5);
        my ($ex, $code2) = login($b, $X);    # b's pub/sub connection in use
        is("$code/$code2", '0/0', "J lost: u$U5 on a, u$X on b");
        wait_numsub($U5, 1);
        wait_numsub($X, 1);
        my $k0 = skipped($a);
        my @pre = send_acked($s, $U5, 3, 'J lost, before');
        receive_all($ea, \@pre, $TO);
        ok(skipped($a) > $k0, "J lost: u$U5 alone on a");

        # b's worker's connections: inbox (db 0), group (db 1), pub/sub
        # (sub=1)
        my $cl = clients();
        my $ports = { map { %{redis_ports_of($_)} } $b->worker_pids };
        my @inbox = grep { $cl->{$_}{addr} =~ /:(\d+)$/ && $ports->{$1}
            && $cl->{$_}{db} == 0 && !$cl->{$_}{sub} } keys %$cl;
        is(scalar @inbox, 1, "J lost: b's inbox connection found")
            or diag(join "\n", map { "id=$_ addr=$cl->{$_}{addr} db=$cl->{$_}{db} "
                . "sub=$cl->{$_}{sub} cmd=$cl->{$_}{cmd}" } sort keys %$cl);
        my $mark = $b->log_mark;
        $redis->cmd(CLIENT => 'KILL', ID => $inbox[0]) if @inbox == 1;
        my $eb = IM::Client->new(port => $b->{im_port}, auto_pong => 1,
            auto_ack => 1, uid => $U5);
        is($eb->login("u$U5", 'pw', client_id => 2), 0,
            "J lost: u$U5 (ClientId 2) logs in on b");
        ok($b->wait_for_log(qr/im redis: connection 0 ready/, from => $mark),
            "J lost: b's inbox connection is back");
        my $log = $b->error_log($mark);
        ok($log =~ /im: uid $U5 client 2 logged in.*im redis: connection 0 ready/s,
            "J lost: the login came while it was down");
        ok(wait_numsub($U5, 2), "J lost: both nodes subscribed");
        sleep 0.3;

        my ($p0, $k1) = (publishes(), skipped($a));
        my @ids = send_acked($s, $U5, 10, 'J lost, after');
        my ($miss) = receive_all($eb, \@ids, $TO);
        is(scalar @$miss, 0, 'J lost: b gets all 10 (a skipped '
            . (skipped($a) - $k1) . ', ' . (publishes() - $p0) . ' PUBLISH)')
            or diag('missing on b: ' . places(\@ids, $miss));
        my (undef, $order_a) = receive_all($ea, \@ids, $TO);
        is_deeply($order_a, \@ids, 'J lost: a gets all 10');
        $_->disconnect for $ea, $eb, $ex;
    }

    # -- a reload right after acks: their removals from the inbox reach
    # Redis (the old worker writes what is queued as it exits)
    if ($wt) {
        my $R = $base + 70;
        my ($ra, $code) = login($a, $R, auto_ack => 0);
        is($code, 0, "reload: u$R logs in on a (acking by hand)");
        wait_numsub($R, 1);
        my @ids;
        for my $i (1 .. 8) {
            my ($id) = send_acked($s, $R, 1, "reload $i");
            push @ids, $id if $id && $ra->expect(cmd => PUBLISH, msgid => $id);
        }
        $ra->ack($_) for @ids;
        is(scalar @ids, 8, 'reload: 8 sent, pushed and acked');
        sleep 0.05;
        $a->reload();
        ok(wait_until(sub { ($redis->cmd(LLEN => "im:inbox:$R") // -1) == 0 },
            5), 'reload: none of them stays in the inbox')
            or diag('left: ' . $redis->cmd(LLEN => "im:inbox:$R"));
        $ra->close;
    }

    $s->disconnect;
    $a->stop();
    $b->stop();
}

$t0->done_testing();
