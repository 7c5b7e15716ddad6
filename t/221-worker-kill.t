#!/usr/bin/perl
# kill -9 of one worker during traffic (issue 4 item 2, Tests; docs/PROTOCOL.md
# §5): two workers, im_zone, reuseport. The master respawns the worker; its
# users (their connections die with it) log in again and get every message
# that was acked to a sender, including ones pushed but not acknowledged,
# ones they never read, and ones sent while they were away; the sessions of
# the other worker are untouched and keep chatting, with each other and with
# the users coming back; the zone's stale entries (pids of the dead worker)
# do not lose messages; later logins and chat work on both workers (no lock
# trouble).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use JSON::PP ();
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login status chat firsts/;
use Time::HiRes qw/time/;

my $t = Test::Nginx->new()->has(qw/http redis/);
# intended here: the killed worker; the master unlocking the zone's mutex
# if the worker died holding it is the recovery asked for
$t->allow_alerts(qr/exited on signal 9/, qr/shared memory zone "im" was locked by/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

sub conf {
    my ($t, $port, $extra) = @_;
    $t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 2;
im_redis ${\ $redis->addr};
$extra
im_zone im 1m;
# quiet pings: a client the test does not read for a while cannot answer a
# PING, and a loaded machine can make that "while" longer than interval +
# timeout; no check here is about pings
im_ping_interval 300s;
im_ping_timeout 5s;
# quiet re-push: v1 is pushed to and does not ack, and after the kill
# "nothing pushed twice" reads what comes back; a re-push of a message
# acked late (a loaded machine) would be a second copy. What comes back
# after the kill comes from the store at login, not from re-pushes.
im_repush_interval 60s;
im_repush_max 8;
im_close_grace 1s;
# removals of acks sent at once: a worker killed while one is held back
# brings the acked message again, a duplicate that PROTOCOL.md allows
# (decision 051; t/155 tests the hold); "nothing pushed twice" counts
im_inbox_batch 0;
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_$port%% reuseport;
        location /ws { im_websocket; im_auth /_auth; }
        location = /status { im_status; }
        ${\ $uc->auth_location }
    }
}
EOF
}

conf($t, 9095, '');
$t->run();
$t->{im_port} = port(9095);

sub acked {
    my ($c, @ids) = @_;
    return grep { $c->expect(cmd => PUB_ACK, msgid => $_, timeout => 3) } @ids;
}

###############################################################################

ok(wait_until(sub { (() = $t->worker_pids) == 2 }, 5), 'two workers');

# sessions on both workers, at least 3 on each (reuseport spreads
# connections by a hash: log in until it is so)
my (%c, %w, %by);
for my $u (2001 .. 2060) {
    my ($c, $code, $pid) = login($t, $u);
    next unless defined $code && $code == 0 && $pid;
    ($c{$u}, $w{$u}) = ($c, $pid);
    push @{$by{$pid}}, $u;
    last if keys %by == 2 && !grep { @$_ < 3 } values %by;
}
my @W = sort { $by{$a}[0] <=> $by{$b}[0] } keys %by;
ok(@W == 2 && !grep({ @$_ < 3 } values %by), 'at least 3 sessions on each worker')
    or BAIL_OUT('users are not spread: ' . join ' ', map { "$_:$w{$_}" } sort keys %w);

# the victim worker holds the first session; the other one survives
my $dead = $W[0];
my @V = @{$by{$W[0]}};
my @S = @{$by{$W[1]}};
my ($v1, $v2, $v3) = @V;
my ($s1, $s2) = @S;
diag("killing worker $dead (u@V); surviving: u@S");

# before: chat both ways across the workers
chat($c{$s1}, $c{$v1}, "u$s1 -> u$v1 before the kill");
chat($c{$v1}, $c{$s1}, "u$v1 -> u$s1 before the kill");

# v1 reads but does not acknowledge: pushed, unacked
$c{$v1}->auto_ack(0);
my @to_v1 = map { $c{$s1}->publish($v1, "to v1 unacked $_") } 1 .. 2;
is(scalar(acked($c{$s1}, @to_v1)), 2, 'messages to v1 acked to the sender');
is_deeply([firsts($c{$v1}, 2)], \@to_v1, 'pushed to v1 (not acknowledged)');

# v2 does not read at all; v3 goes on chatting
$c{$v2}->ws->stop_reading;
my @to_v2 = map { $c{$s2}->publish($v2, "to v2 unread $_") } 1 .. 3;
is(scalar(acked($c{$s2}, @to_v2)), 3, 'messages to v2 acked to the sender');

# what a victim sent and had acked must reach the survivor
my $from_v3 = $c{$v3}->publish($s2, 'from v3 right before the kill');
ok($c{$v3}->expect(cmd => PUB_ACK, msgid => $from_v3), 'v3 -> s2 acked');

# traffic across the kill: a burst s1 -> v2, the kill in its middle
my @burst = map { $c{$s1}->publish($v2, "burst $_") } 1 .. 10;
my $mark = $t->log_mark;
kill 'KILL', $dead;
push @burst, map { $c{$s1}->publish($v2, "burst $_") } 11 .. 20;
my @burst_acked = acked($c{$s1}, @burst);
is(scalar(@burst_acked), 20, 'the burst across the kill is acked to the sender');

ok($t->wait_for_log(qr/worker process $dead exited on signal 9/, from => $mark),
    'the master saw the worker die');
my $respawned = $t->wait_for_log(qr/start worker process (\d+)/, from => $mark);
ok($respawned, "the master respawned it (pid ${\ ($respawned // '?')})");
ok(wait_until(sub { (() = $t->worker_pids) == 2 }, 5), 'two workers again');

# the respawned worker sweeps the dead one's pids from the zone as it
# starts (which may be after the master logged its start, and /status may
# be answered by either worker): then only the survivors' users are listed
# (v2's entry may also have been dropped when the burst's datagram bounced)
my $nu;
wait_until(sub { ($nu = status(port(9095))->{node_users} // -1) == @S });
is($nu, scalar(@S), 'the zone lists only the surviving worker\'s users');

# the victims' connections died with the worker
for my $u (@V) {
    ok($c{$u}->wait_closed(3), "u$u: connection gone with the worker");
}

# the survivors are untouched
for my $u (@S) {
    ok(!$c{$u}->is_closed, "u$u: still connected");
}
chat($c{$s1}, $c{$s2}, 'survivors chat after the kill');
chat($c{$s2}, $c{$s1}, 'survivors chat after the kill, back');
ok($c{$s2}->expect(cmd => PUBLISH, msgid => $from_v3),
    "s2 got v3's message sent right before the kill");
ok(!grep({ $_->{cmd} == LOGOUT || $_->{cmd} == DISCONNECT }
    map { $c{$_}->drain(0.2) } @S), 'no LOGOUT or DISCONNECT for the survivors');

# while the victims are away (the zone still names the dead worker for them)
push @to_v1, $c{$s1}->publish($v1, 'to v1 while away');
push @to_v2, $c{$s2}->publish($v2, 'to v2 while away');
my $to_v3 = $c{$s2}->publish($v3, 'to v3 while away');
ok($c{$s1}->expect(cmd => PUB_ACK, msgid => $to_v1[-1]), 'to v1 while away: acked');
ok($c{$s2}->expect(cmd => PUB_ACK, msgid => $to_v2[-1]), 'to v2 while away: acked');
ok($c{$s2}->expect(cmd => PUB_ACK, msgid => $to_v3), 'to v3 while away: acked');

# they come back: everything acked to a sender and not acknowledged by them
my %back;
# (in the order the server took them: v2's three, the burst, the last one)
for my $x ([$v1, \@to_v1], [$v2, [@to_v2[0 .. 2], @burst, $to_v2[3]]],
    [$v3, [$to_v3]])
{
    my ($u, $want) = @$x;
    my ($c, $code, $pid) = login($t, $u);
    is($code, 0, "u$u logs in again (on worker ${\ ($pid // '?')})");
    my @got = firsts($c, scalar(@$want));
    is_deeply([sort @got], [sort @$want], "u$u gets every acked message")
        or diag(scalar(@got) . ' of ' . scalar(@$want));
    is_deeply(\@got, $want, "u$u gets them in order");
    ($back{$u}, $w{$u}) = ($c, $pid);
}
is_deeply([firsts($back{$v1}, 0, 1)], [], 'nothing pushed twice after the acks');

# they chat with the survivors, both ways
for my $u ($v1, $v2, $v3) {
    chat($c{$s1}, $back{$u}, "survivor u$s1 -> u$u back");
    chat($back{$u}, $c{$s2}, "u$u back -> survivor u$s2");
}

# later logins spread over the surviving and the respawned worker; chat
# across them, both ways (the zone's directory and lock work)
my (%late, %lw);
for my $u (2201 .. 2260) {
    my ($c, $code, $pid) = login($t, $u);
    next unless defined $code && $code == 0 && $pid;
    $late{$u} = $c;
    $lw{$pid} //= $u;
    last if keys %lw == 2;
}
is(scalar(keys %lw), 2, 'later logins land on both workers');
ok($respawned && $lw{$respawned}, 'one of them on the respawned worker');
my ($l1, $l2) = sort values %lw;
if ($l1 && $l2) {
    chat($late{$l1}, $late{$l2}, 'later logins chat across the workers');
    chat($late{$l2}, $late{$l1}, 'later logins chat across the workers, back');
    chat($late{$l1}, $c{$s1}, 'a later login -> a survivor');
    chat($c{$s2}, $late{$l2}, 'a survivor -> a later login');
}

# a uid that moves from one worker to the other keeps working (its stale
# entry in the zone is overwritten / dropped)
{
    my $u = $v3;
    $back{$u}->disconnect;
    my ($c, $code, $pid);
    for (1 .. 50) {
        ($c, $code, $pid) = login($t, $u);
        last if $pid && $pid ne $w{$u};
        $c->disconnect;
    }
    ok($pid && $pid ne $w{$u}, "u$u logs in on the other worker");
    chat($c{$s1}, $c, "u$s1 -> u$u after it moved") if $c;
}

$t->stop();

###############################################################################
# the same with im_login_policy reject: the killed worker's sessions are
# not live any more, so their users must be able to log in again (their
# presence keys in Redis name the dead worker)

{
    my $t2 = Test::Nginx->new()->has(qw/http redis/);
    $t2->allow_alerts(qr/exited on signal 9/, qr/shared memory zone "im" was locked by/);
    conf($t2, 9096, 'im_login_policy reject;');
    my $p2 = port(9096);
    $t2->run();
    ok(wait_until(sub { (() = $t2->worker_pids) == 2 }, 5), 'reject: two workers');

    my (%c2, %by2);
    for my $u (2301 .. 2360) {
        my $c = IM::Client->new(port => $p2, auto_pong => 1, uid => $u,
            auto_ack => 1);
        my $mark = $t2->log_mark;
        next unless ($c->login("u$u", 'pw') // -1) == 0;
        my $pid = $t2->wait_for_log(
            qr/#(\d+): [^\n]*im: uid $u client \d+ logged in(?! elsewhere)\b/,
            from => $mark) or next;
        $c2{$u} = $c;
        push @{$by2{$pid}}, $u;
        last if keys %by2 == 2 && !grep { @$_ < 1 } values %by2;
    }
    my @W2 = sort { $by2{$a}[0] <=> $by2{$b}[0] } keys %by2;
    is(scalar(@W2), 2, 'reject: sessions on both workers');
    my ($victim) = @{$by2{$W2[0]}};
    my ($other) = @{$by2{$W2[1]}};

    # sanity: a second login of the victim is refused while it lives
    my $dup = IM::Client->new(port => $p2, auto_pong => 1);
    is($dup->login("u$victim", 'pw'), 1, 'reject: a second login is refused');
    $dup->close;

    my $id = $c2{$other}->publish($victim, 'reject: before the kill');
    ok($c2{$other}->expect(cmd => PUB_ACK, msgid => $id), 'reject: acked');
    ok($c2{$victim}->expect(cmd => PUBLISH, msgid => $id), 'reject: delivered');
    my $id2 = $c2{$other}->publish($victim, 'reject: while away');

    kill 'KILL', $W2[0];
    ok($c2{$victim}->wait_closed(3), 'reject: the victim lost its connection');
    ok($c2{$other}->expect(cmd => PUB_ACK, msgid => $id2), 'reject: acked while away');

    # it reconnects at once, as the field's client does
    my ($back, $code, $tries, $start) = (undef, undef, 0, time);
    while (time - $start < $Test::Nginx::TIMEOUT) {
        $tries++;
        $back = IM::Client->new(port => $p2, auto_pong => 1, auto_ack => 1,
            uid => $victim);
        $code = $back->login("u$victim", 'pw');
        last if defined $code && $code == 0;
        $back->close;
        select(undef, undef, undef, 0.5);
    }
    {
        is($code, 0, 'reject: the victim logs in again (within the harness bound)')
            or diag("last code " . ($code // 'none') . " after $tries tries; "
                . "im:p:$victim:0 = " . ($redis->cmd(GET => "im:p:$victim:0") // 'nil')
                . ", TTL " . ($redis->cmd(TTL => "im:p:$victim:0") // '?'));
    }
    if (defined $code && $code == 0) {
        ok($back->expect(cmd => PUBLISH, msgid => $id2),
            'reject: the message sent while away is delivered');
    }
    $_->disconnect for values %c2;
    $t2->stop();
}

$t->done_testing();
