#!/usr/bin/perl
# Offline delivery and order (docs/PROTOCOL.md 3.4, 5) over ws and wss: 5
# messages sent while the recipient is offline are pushed after its login,
# in order, with their MsgIds and push bytes, before anything sent after
# the login; acked ones never come again (third login: nothing);
# unacked ones do, in order; pushes to an online recipient keep the order
# the server accepted them in.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");
# quiet re-push (60 s): the recipients read up to 300 pushes one after
# another (seconds on a loaded machine) and check the order and that none
# comes twice; a re-push of one acked late would be a second copy. What is
# not acked comes again at the next login, which is what is checked.
write_conf($t, redis => $redis, uc => $uc,
    main => "im_close_grace 2s;\nim_repush_interval 60s;");
$t->run();

# every PUBLISH arriving within $s seconds (acked when $ack), in order
sub pushes {
    my ($c, $s, $ack) = @_;
    my @p;
    my $deadline = time + $s;
    while (my $m = $c->next(timeout => $deadline - time)) {
        next unless $m->{cmd} == PUBLISH;
        push @p, $m;
        $c->ack($m->{msgid}) if $ack;
    }
    return @p;
}

# wait until N pushes arrived (or $s seconds)
sub n_pushes {
    my ($c, $n, $s, $ack) = @_;
    my @p;
    my $deadline = time + $s;
    while (@p < $n and my $m = $c->next(timeout => $deadline - time)) {
        next unless $m->{cmd} == PUBLISH;
        push @p, $m;
        $c->ack($m->{msgid}) if $ack;
    }
    return @p;
}

my $base = 6000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);
    my $r = $base + 1;

    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login("s$base", 'pw'), 0, "$name: sender logs in");

    # -- 5 while offline
    my @ids;
    for my $i (1 .. 5) {
        push @ids, $s->publish($r, "offline $i");
        ok($s->expect(cmd => PUB_ACK, msgid => $ids[-1]), "$name: offline $i acked to the sender");
    }
    my $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login("u$r", 'pw'), 0, "$name: recipient logs in");
    my $late = $s->publish($r, 'after login');
    my @p = n_pushes($c, 6, 5, 0);
    is(join(' ', map { $_->{text} // '?' } @p),
        'offline 1 offline 2 offline 3 offline 4 offline 5 after login',
        "$name: the 5 stored messages first, in order, then the new one");
    is(join(' ', map { $_->{msgid} } @p), join(' ', @ids, $late), "$name: with their MsgIds");
    is(scalar(grep { $_->{raw} eq push_msg($_->{msgid}, $_->{payload}) } @p), scalar @p,
        "$name: as plain <<3, MsgId, Len, Payload>> pushes");

    # ack 1..3 and the new one; 4 and 5 stay unacked
    $c->ack($_->{msgid}) for @p[0 .. 2, 5];
    sleep 0.3;
    $c->close(1000);
    ok($c->wait_closed(2), "$name: recipient leaves with 4 and 5 unacked");

    $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login("u$r", 'pw'), 0, "$name: recipient logs in a second time");
    @p = n_pushes($c, 2, 4, 1);
    push @p, pushes($c, 1.2, 1);
    is(join(' ', map { $_->{text} // '?' } @p), 'offline 4 offline 5',
        "$name: only the unacked ones again, in order");
    $c->close(1000);
    $c->wait_closed(2);

    $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login("u$r", 'pw'), 0, "$name: recipient logs in a third time");
    @p = pushes($c, 1.5, 1);
    is(join(' ', map { $_->{text} // '?' } @p), '', "$name: nothing: every message was acked");

    # -- order of pushes to an online recipient: ws sender and TCP API
    my $tcp = IM::TCP->new(port => port(19095));
    my @want;
    for my $i (1 .. 30) {
        if ($i % 3) {
            $s->publish($r, "o$i");
        } else {
            $tcp->send_msg(publish_msg($r, msgid(), "{\"content\":{\"type\":\"text\",\"text\":\"o$i\"}}"));
            $tcp->recv_msg;    # one API client: wait for its ack to fix the order
        }
        push @want, "o$i";
    }
    @p = n_pushes($c, 30, 8, 1);
    is(join(' ', map { $_->{text} // '?' } @p), join(' ', @want),
        "$name: 30 online pushes in the order accepted");

    # a burst without waiting, from one sender
    my @burst = map { $s->publish($r, "b$_") } 1 .. 50;
    @p = n_pushes($c, 50, 8, 1);
    is(join(' ', map { $_->{msgid} } @p), join(' ', @burst), "$name: a burst of 50 arrives in order");
    my %burst = map { $_ => 1 } @burst;
    my @acks = grep { $_->{cmd} == PUB_ACK && $burst{$_->{msgid}} } $s->drain(1);
    is(join(' ', map { $_->{msgid} } @acks), join(' ', @burst),
        "$name: the sender gets the 50 PUB_ACKs, in order");
    $c->close(1000);

    # -- logging in while messages pour in: stored ones first, then live
    # ones, in the order accepted, none lost, none twice
    {
        my $w = $base + 7;
        my ($rc, @ids, %acked);
        my $acks = sub {
            $acked{$_->{msgid}} = 1 for grep { $_->{cmd} == PUB_ACK } $s->drain($_[0]);
        };
        for my $k (1 .. 300) {
            push @ids, $s->publish($w, "n$k");
            if ($k == 100) {
                $rc = IM::Client->new(%o, auto_pong => 1);
                $rc->send(connect_msg("u$w", 'pw'));
            }
            $acks->(0.001) unless $k % 50;
        }
        # read the recipient at once
        my $m = $rc->expect(cmd => CONNECT_ACK);
        is($m && $m->{code}, 0, "$name: recipient logged in during the burst");
        my (@seq, %seen);
        my $deadline = time + 10;
        while (keys(%seen) < 300 and my $p = $rc->next(timeout => $deadline - time)) {
            next unless $p->{cmd} == PUBLISH;
            $rc->ack($p->{msgid});
            push @seq, ($p->{text} // '?') =~ /^n(\d+)$/ ? $1 : -1;
            $seen{$p->{msgid}}++;
        }
        push @seq, map { $_->{text} =~ /^n(\d+)$/ ? $1 : -1 } grep { $_->{cmd} == PUBLISH } $rc->drain(0.5);
        $acks->(1);
        is(scalar(keys %acked), 300, "$name: all 300 acked to the sender");
        is(scalar(grep { !$seen{$_} } keys %acked), 0, "$name: every acked message delivered");
        my @bad = grep { $seq[$_] <= $seq[$_ - 1] } 1 .. $#seq;
        is(scalar @bad, 0, "$name: in the order accepted, no duplicates")
            or diag("sequence: @seq\nout of order at: " . join(' ', map { "$seq[$_ - 1]->$seq[$_]" } @bad[0 .. ($#bad < 9 ? $#bad : 9)]));
        $rc->close(1000);
    }
    $s->close(1000);
});

$t->done_testing();
