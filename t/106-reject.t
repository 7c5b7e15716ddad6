#!/usr/bin/perl
# Login policy reject (im_login_policy reject, docs/PROTOCOL.md 3.2) over ws
# and wss: a second login of the same (uid, ClientId) gets CONNECT_ACK 1 (then
# the grace close); the first session is untouched; another ClientId of the uid
# is accepted; once the first session ends the uid can log in again.
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
    main => "im_login_policy reject;\nim_close_grace 2s;");
$t->run();

my $base = 5000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $base += 100 * ($i + 1);
    my $x = $base + 1;

    my $s = IM::Client->new(%o, auto_pong => 1);
    is($s->login("s$base", 'pw'), 0, "$name: sender logs in");

    for my $cid (2, undef) {
        my $what = defined $cid ? "ClientId $cid" : 'no ClientId';
        my %opt = defined $cid ? (role => 1, client_id => $cid) : ();
        my $a1 = IM::Client->new(%o, auto_pong => 1);
        is($a1->login("u$x", 'pw', %opt), 0, "$name: $what: first session");

        my $a2 = IM::Client->new(%o, auto_pong => 1);
        my $t0 = time;
        my $m = do { $a2->send(connect_msg("u$x", 'pw', %opt)); $a2->expect(cmd => CONNECT_ACK) };
        is($m && $m->{raw}, "\x02\x01", "$name: $what: second login of the same (uid, ClientId) -> exactly <<2,1>>");
        my $left = $t0 + 1.3 - time;
        ok(!($left > 0 ? $a2->ws->wait_closed($left) : $a2->is_closed),
            "$name: $what: the refused connection stays open during the grace");
        ok($a2->ws->wait_closed(3), "$name: $what: ... then the server closes it");

        ok(!grep({ $_->{cmd} == LOGOUT } $a1->drain(0.2)), "$name: $what: the first session got no LOGOUT");
        my $id = $s->publish($x, 'still yours');
        ok($a1->expect(cmd => PUBLISH, msgid => $id), "$name: $what: the first session still receives");
        $a1->ack($id);

        # a different ClientId is another device: accepted
        my $other = IM::Client->new(%o, auto_pong => 1);
        is($other->login("u$x", 'pw', role => 1, client_id => 9), 0,
            "$name: $what: another ClientId of the uid is accepted");
        $other->close(1000);
        $other->wait_closed(2);

        # once the first session is gone, the (uid, ClientId) is free again
        $a1->close(1000);
        ok($a1->wait_closed(2), "$name: $what: first session closed by the client");
        my $ok = IM::Client->new(%o, auto_pong => 1);
        is($ok->login("u$x", 'pw', %opt), 0,
            "$name: $what: login accepted after the first session ended")
            or undef $ok;
        if ($ok) {
            my $id2 = $s->publish($x, 'to the new one');
            ok($ok->expect(cmd => PUBLISH, msgid => $id2), "$name: $what: the new session receives");
            $ok->ack($id2);
            $ok->close(1000);
            $ok->wait_closed(2);
        }
    }

    # a session that is closed by the server (DISCONNECT from the client)
    # frees the slot too
    {
        my $a1 = IM::Client->new(%o, auto_pong => 1);
        is($a1->login("u$x", 'pw', role => 1, client_id => 5), 0, "$name: ClientId 5 logs in");
        $a1->disconnect;
        ok($a1->wait_closed(3), "$name: DISCONNECT closes it");
        my $a2 = IM::Client->new(%o, auto_pong => 1);
        is($a2->login("u$x", 'pw', role => 1, client_id => 5), 0, "$name: ClientId 5 logs in again");
        $a2->close(1000);
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
