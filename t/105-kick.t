#!/usr/bin/perl
# Login policy kick (the default, docs/PROTOCOL.md 3.2) over ws and wss: a
# second login of the same (uid, ClientId) replaces the first, which gets
# exactly <<20>> (LOGOUT) and is closed after im_close_grace (2s); its unacked
# messages are delivered to the new session; the new one works. Sessions of one
# uid with different ClientIds coexist and all receive.
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
# quiet re-push (60 s): what the replaced session did not ack reaches the
# new one from the store at login, and "no re-push" checks after acks must
# not depend on how soon a loaded machine delivers the acks
write_conf($t, redis => $redis, uc => $uc,
    main => "im_close_grace 2s;\nim_repush_interval 60s;");
$t->run();

my $base = 4000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);
    my $x = $base + 1;
    my $y = $base + 2;

    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login("s$base", 'pw'), 0, "$name: sender logs in");

    for my $cid (1, undef) {
        my $what = defined $cid ? "ClientId $cid" : 'no ClientId';
        my %opt = defined $cid ? (role => 1, client_id => $cid) : ();
        my $a1 = IM::Client->new(%o, auto_pong => 1);
        is($a1->login("u$x", 'pw', %opt), 0, "$name: $what: first session");
        my $m1 = $s->publish($x, 'to the first');
        ok($a1->expect(cmd => PUBLISH, msgid => $m1), "$name: $what: first session gets m1 (not acked)");

        # the grace (2s) starts when the server sends LOGOUT, after $t0:
        # the old session is closed at $t0 + 2 at the earliest
        my $a2 = IM::Client->new(%o, auto_pong => 1);
        my $t0 = time;
        is($a2->login("u$x", 'pw', %opt), 0, "$name: $what: second login of the same (uid, ClientId) accepted");
        my $lo = $a1->expect(cmd => LOGOUT);
        is($lo && $lo->{raw}, "\x14", "$name: $what: the old session gets exactly <<20>>");
        my $left = $t0 + 1.8 - time;
        ok(!($left > 0 ? $a1->ws->wait_closed($left) : $a1->is_closed),
            "$name: $what: the replaced session stays open during the grace");

        # the new one gets m1 (the old one never acked it) and new messages
        my $got = $a2->expect(cmd => PUBLISH, msgid => $m1, timeout => 6);
        ok($got, "$name: $what: m1, unacked by the old session, reaches the new one");
        $a2->ack($m1) if $got;
        my $m2 = $s->publish($x, 'to the second');
        ok($s->expect(cmd => PUB_ACK, msgid => $m2), "$name: $what: m2 acked to the sender");
        ok($a2->expect(cmd => PUBLISH, msgid => $m2), "$name: $what: the new session gets m2");
        $a2->ack($m2);

        # the old one: nothing new, open during the grace, closed after it
        my @old = grep { $_->{cmd} == PUBLISH && $_->{msgid} eq $m2 } $a1->drain(0.3);
        is(scalar @old, 0, "$name: $what: the replaced session does not get m2");
        ok($a1->ws->wait_closed(2 + $Test::Nginx::TIMEOUT), "$name: $what: ... and is closed after it");
        my $dt = time - $t0;
        ok($dt > 1.8, "$name: $what: closed im_close_grace after LOGOUT, not sooner: "
            . sprintf('%.2fs', $dt));

        # the new one still works, and keeps working after the old one went
        my $m3 = $s->publish($x, 'after the old one closed');
        ok($a2->expect(cmd => PUBLISH, msgid => $m3), "$name: $what: the new session still works");
        $a2->ack($m3);
        ok(!grep({ $_->{cmd} == LOGOUT } $a2->drain(0.3)), "$name: $what: the new session got no LOGOUT");
        $a2->close(1000);
        $a2->wait_closed(2);
    }

    # -- two ClientIds of one uid coexist, both receive
    {
        my $b1 = IM::Client->new(%o, auto_pong => 1);
        my $b2 = IM::Client->new(%o, auto_pong => 1);
        my $b0 = IM::Client->new(%o, auto_pong => 1);
        is($b1->login("u$y", 'pw', role => 1, client_id => 1), 0, "$name: uid $y ClientId 1");
        is($b2->login("u$y", 'pw', role => 1, client_id => 2), 0, "$name: uid $y ClientId 2");
        is($b0->login("u$y", 'pw', role => 1), 0, "$name: uid $y without ClientId");
        my $id = $s->publish($y, 'to every device');
        ok($s->expect(cmd => PUB_ACK, msgid => $id), "$name: PUB_ACK");
        for ([1, $b1], [2, $b2], [0, $b0]) {
            my ($cid, $c) = @$_;
            my $m = $c->expect(cmd => PUBLISH, msgid => $id);
            ok($m, "$name: ClientId $cid gets the message");
            $c->ack($id);
        }
        for ([1, $b1], [2, $b2], [0, $b0]) {
            my ($cid, $c) = @$_;
            ok(!grep({ $_->{cmd} == LOGOUT || $_->{cmd} == PUBLISH } $c->drain(0.3)),
                "$name: ClientId $cid: no LOGOUT, no re-push");
        }

        # replacing ClientId 1 leaves ClientId 2 and 0 alone
        my $b1n = IM::Client->new(%o, auto_pong => 1);
        is($b1n->login("u$y", 'pw', role => 2, client_id => 1), 0, "$name: ClientId 1 logs in again");
        ok($b1->expect(cmd => LOGOUT), "$name: the old ClientId 1 gets LOGOUT");
        my $id2 = $s->publish($y, 'again to every device');
        for (['1 (new)', $b1n], [2, $b2], [0, $b0]) {
            my ($cid, $c) = @$_;
            ok($c->expect(cmd => PUBLISH, msgid => $id2), "$name: ClientId $cid gets the next message");
        }
        ok(!grep({ $_->{cmd} == LOGOUT } $b2->drain(0.2), $b0->drain(0.1)),
            "$name: the other ClientIds got no LOGOUT");

        # acked by one of them: it left the store
        $b2->ack($id2);
        sleep 0.3;
        $_->close(1000) for $b1n, $b2, $b0;
        $_->wait_closed(2) for $b1n, $b2, $b0;
        $b1->ws->wait_closed(3);
        my $again = IM::Client->new(%o, auto_pong => 1);
        is($again->login("u$y", 'pw', role => 1, client_id => 3), 0, "$name: uid $y logs in later");
        my @back = grep { $_->{cmd} == PUBLISH } $again->drain(1.2);
        is(join(' ', map { $_->{text} // '?' } @back), '',
            "$name: a message acked by one session of the uid is not stored for later");
        $again->close(1000);
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
