#!/usr/bin/perl
# Unacknowledged pushes (docs/PROTOCOL.md 3.4) over ws and wss: re-pushed every
# im_repush_interval (1s here), exactly 3 re-pushes, then the session is
# closed and the message is delivered again after the next login. Acks 4,
# 6 and 12 all count, a long ack (MsgId ++ "_" ++ 32 bytes) counts, an
# unknown ack is ignored.
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
    main => "im_repush_interval 1s;\nim_repush_max 3;\nim_close_grace 2s;");
$t->run();

my $base = 3000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);
    my ($su, $ru) = ("s$base", 'r' . ($base + 1));
    my $ruid = $base + 1;

    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login($su, 'pw'), 0, "$name: sender logs in");

    # -- never acked: 1 push + 3 re-pushes, ~1s apart, then closed
    {
        my $r = IM::Client->new(%o, auto_pong => 1);
        is($r->login($ru, 'pw'), 0, "$name: recipient logs in");
        my $id = $s->publish($ruid, 'unacked');
        ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: PUB_ACK");

        # (1 push + 3 re-pushes + the close: ~4 s, and the harness's bound)
        my (@at, @raw, @other);
        my $deadline = time + 4 + $Test::Nginx::TIMEOUT;
        while (time < $deadline) {
            my $m = $r->next(timeout => $deadline - time) or last;
            if ($m->{cmd} == PUBLISH && $m->{msgid} eq $id) {
                push @at, time;
                push @raw, $m->{raw};
            } else {
                push @other, $m;
            }
        }
        my $closed_at = time;
        ok($r->ws->wait_closed(0.1), "$name: session closed after the re-pushes");
        is(scalar @at, 4, "$name: the push and exactly 3 re-pushes");
        is(scalar(grep { $_ eq push_msg($id, $raw[0] ? decode_server($raw[0])->{payload} : '') } @raw),
            scalar @raw, "$name: every re-push is the same bytes");
        # not sooner than im_repush_interval (1s): each gap over 0.6s, the
        # three together over 2.4s (how much later is the machine's
        # business: the loop above is bounded)
        my @gaps = map { $at[$_] - $at[$_ - 1] } 1 .. $#at;
        my $gaps = join ' ', map { sprintf '%.2f', $_ } @gaps;
        my $span = @at == 4 ? $at[3] - $at[0] : 0;
        ok(@gaps == 3 && !grep({ $_ < 0.6 } @gaps) && $span > 2.4,
            "$name: re-pushes im_repush_interval (1s) apart: $gaps");
        my $after = @at ? $closed_at - $at[-1] : -1;
        ok(@at && $after > 0.5,
            "$name: closed an interval after the last re-push, not sooner: "
            . sprintf('%.2fs', $after));
        is(join(',', map { $_->{name} } grep { $_->{cmd} != PING && $_->{cmd} != DISCONNECT } @other), '',
            "$name: nothing else pushed (PING, DISCONNECT allowed)");

        # the next login gets it again, same MsgId and bytes
        my $r2 = IM::Client->new(%o, auto_pong => 1);
        is($r2->login($ru, 'pw'), 0, "$name: recipient logs in again");
        my $m = $r2->expect(cmd => PUBLISH);
        is($m && $m->{msgid}, $id, "$name: the unacked message is delivered after the next login");
        is($m && $m->{raw}, $raw[0], "$name: ... with the same bytes");
        $r2->ack($id) if $m;
        ok($r2->nothing_for(1.5), "$name: acked: no re-push");
        $r2->close(1000);
        $r2->wait_closed(2);
        my $r3 = IM::Client->new(%o, auto_pong => 1);
        is($r3->login($ru, 'pw'), 0, "$name: recipient logs in a third time");
        ok($r3->nothing_for(1.2), "$name: ... nothing delivered again");
        $r3->close(1000);
        $r3->wait_closed(2);
    }

    # -- the re-push timer outlives an ack: it was set for A, which is acked;
    # B, pushed half an interval later, is still re-pushed, on its own
    # schedule (not at A's deadline), and quiet once acked
    {
        my $r = IM::Client->new(%o, auto_pong => 1);
        is($r->login($ru, 'pw'), 0, "$name: recipient logs in (timer after ack)");
        my $a = $s->publish($ruid, 'A');
        ok($r->expect(cmd => PUBLISH, msgid => $a), "$name: A pushed");
        $r->ack($a);
        sleep 0.5;
        my $b = $s->publish($ruid, 'B');
        my @at;
        my $deadline = time + 1 + $Test::Nginx::TIMEOUT;
        while (time < $deadline && @at < 2) {
            my $m = $r->next(timeout => $deadline - time) or last;
            push @at, time if $m->{cmd} == PUBLISH && $m->{msgid} eq $b;
        }
        my $gap = @at >= 2 ? $at[1] - $at[0] : -1;
        ok(@at >= 2 && $gap > 0.6,
            "$name: B re-pushed about an interval after its push: "
            . sprintf('%d pushes, first gap %.2fs', scalar @at, $gap));
        $r->ack($b);
        ok(!grep({ $_->{cmd} == PUBLISH } $r->drain(1.5)), "$name: B acked: quiet");
        ok(!$r->is_closed, "$name: session still open");
        $r->close(1000);
        $r->wait_closed(2);
    }

    # -- the acks: 4, 6, 12, long, unknown
    {
        my $r = IM::Client->new(%o, auto_pong => 1);
        is($r->login($ru, 'pw'), 0, "$name: recipient logs in (acks)");
        my %ack = (
            ack4  => sub { pub_ack($_[0]) },
            ack6  => sub { group_pub_ack($_[0]) },
            ack12 => sub { part_pub_ack($_[0]) },
            long4 => sub { pub_ack($_[0] . '_' . ('0123456789abcdef' x 2)) },
            long6 => sub { group_pub_ack($_[0] . '_' . ('fedcba9876543210' x 2)) },
        );
        my @kinds = sort keys %ack;
        my %id;
        # each one acked as soon as it is pushed (well within the interval)
        for my $k (@kinds, 'unknown') {
            $id{$k} = $s->publish($ruid, $k);
            ok($s->expect(cmd => PUB_ACK, msgid => $id{$k}), "$name: $k: PUB_ACK");
            my $m = $r->expect(cmd => PUBLISH, msgid => $id{$k});
            ok($m, "$name: $k: pushed");
            if ($k eq 'unknown') {
                $r->send(pub_ack(msgid()));    # nobody's MsgId
                $r->send(group_pub_ack(msgid()));
            } else {
                $r->send($ack{$k}->($id{$k}));
            }
        }
        # the message acked with an unknown id comes again (the others,
        # pushed before it, would have come again before it); then a
        # moment more for anything else
        my @all;
        my $deadline = time + 1 + $Test::Nginx::TIMEOUT;
        while (time < $deadline) {
            my $m = $r->next(timeout => $deadline - time) or last;
            push @all, $m;
            last if $m->{cmd} == PUBLISH && $m->{msgid} eq $id{unknown};
        }
        push @all, $r->drain(0.3);
        my @again = grep { $_->{cmd} == PUBLISH } @all;
        is(join(' ', sort map { $_->{text} // $_->{payload} } @again), 'unknown',
            "$name: acks 4, 6, 12 and long acks stop re-pushes; the unknown ack does not");
        ok(!grep({ $_->{cmd} == INVALID_PACKET } @all), "$name: no error for the unknown ack");
        ok(!$r->is_closed, "$name: session still open after the unknown ack");
        $r->ack($id{unknown});
        ok(!grep({ $_->{cmd} == PUBLISH } $r->drain(1.5)), "$name: finally acked: quiet");
        # the session still works
        my $id = $s->publish($ruid, 'later');
        ok($r->expect(cmd => PUBLISH, msgid => $id), "$name: session works after all that");
        $r->ack($id);
        $r->close(1000);
        $r->wait_closed(2);

        # none of them comes back after a new login
        my $r2 = IM::Client->new(%o, auto_pong => 1);
        is($r2->login($ru, 'pw'), 0, "$name: recipient logs in again");
        my @back = grep { $_->{cmd} == PUBLISH } $r2->drain(1.2);
        is(join(' ', map { $_->{text} // $_->{payload} } @back), '',
            "$name: every acked message left the store");
        $r2->close(1000);
    }
    # -- acks are per recipient: another uid acking my MsgId changes nothing,
    # and one MsgId sent to two uids is two deliveries
    {
        my ($au, $eu) = ($base + 5, $base + 6);
        my $a = IM::Client->new(%o, auto_pong => 1);
        my $e = IM::Client->new(%o, auto_pong => 1);
        is($a->login("a$au", 'pw'), 0, "$name: A logs in");
        is($e->login("e$eu", 'pw'), 0, "$name: E logs in");
        my $id = $s->publish($au, 'for A only');
        ok($a->expect(cmd => PUBLISH, msgid => $id), "$name: A gets it (no ack yet)");
        $e->send(pub_ack($id));    # E acks A's MsgId
        my $again = $a->expect(cmd => PUBLISH, msgid => $id, timeout => 1 + $Test::Nginx::TIMEOUT);
        ok($again, "$name: E's ack of A's MsgId does not stop A's re-push");
        $a->close(1000);
        $a->wait_closed(2);
        $a = IM::Client->new(%o, auto_pong => 1);
        is($a->login("a$au", 'pw'), 0, "$name: A logs in again");
        ok($a->expect(cmd => PUBLISH, msgid => $id), "$name: ... and still gets it: E's ack did not remove it");
        $a->ack($id);

        my $shared = msgid();
        $s->publish($au, 'same id to A', msgid => $shared);
        $s->publish($eu, 'same id to E', msgid => $shared);
        my $ma = $a->expect(cmd => PUBLISH, msgid => $shared);
        my $me = $e->expect(cmd => PUBLISH, msgid => $shared);
        is($ma && $ma->{text}, 'same id to A', "$name: one MsgId to two uids: A gets its own");
        is($me && $me->{text}, 'same id to E', "$name: ... and E gets its own");
        $a->ack($shared);    # A acks; E does not
        $e->close(1000);
        $e->wait_closed(2);
        $e = IM::Client->new(%o, auto_pong => 1);
        is($e->login("e$eu", 'pw'), 0, "$name: E logs in again");
        my $m = $e->expect(cmd => PUBLISH, msgid => $shared);
        is($m && $m->{text}, 'same id to E', "$name: A's ack did not remove E's copy");
        $e->ack($shared) if $m;
        $_->close(1000) for $a, $e;
    }
    $s->close(1000);
});

# every session ended: nothing leaked
{
    my ($ok, $st) = no_sessions_left(8);
    ok($ok, 'no session or user left in /status once every client is gone')
        or diag(explain($st));
}

$t->done_testing();
