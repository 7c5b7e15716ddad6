#!/usr/bin/perl
# The newer login wins (decision 042, docs/PROTOCOL.md 3.2): a login whose
# CONNECT was read before the live session's of the same (uid, ClientId),
# but whose user centre answered after it (an attempt the client gave up on
# while the server was behind), must not kick that session. It is answered
# CONNECT_ACK 1, as a duplicate, and the live session goes on.
#
# The user centre answers "slow<uid>" 8 s late with the uid, "u<uid>" at
# once. The slow CONNECT is sent first and the test waits until the user
# centre has it (so the server read it first); the fast login of the same
# uid and ClientId is accepted meanwhile; then the slow answer comes.
#   1. both on one node (one worker): decided in the worker's own table;
#   2. the slow one on node a, the live session on node b: a's 'K' reaches
#      b, b keeps its newer session and answers with its own 'K', a's login
#      loses before its CONNECT_ACK.
# Each time: the old login gets CONNECT_ACK 1 (the module before this change
# gave it 0 and the live session LOGOUT), the live session answers a PING and
# gets a message sent afterwards, and im_stale_logins_total counts it.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/chat/;

my %TIMERS = (
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_close_grace     => '1s',
);

my $t0 = Test::Nginx->new()->has(qw/http redis/);
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => join '',
    map({ "slow$_ pw delay:8:$_\n" } 1301, 1302), "* * uid-from-name\n");

my %node;
for my $n (['a', 9095], ['b', 9096]) {
    my $t = IM::Cluster::node(name => $n->[0], port => $n->[1],
        redis => $redis, uc => $uc, workers => 1, timers => \%TIMERS,
        locations => 'location = /metrics { im_metrics; }');
    $t->run();
    $node{$n->[0]} = $t;
}

sub metric {
    my ($port, $name) = @_;
    my $r = http_get('/metrics', port => $port) // '';
    return $r =~ /^\Q$name\E (\d+)$/m ? $1 : 0;
}

sub stale_case {
    my ($name, $uid, $old_on, $new_on) = @_;
    my $oldport = $node{$old_on}{im_port};
    my $newport = $node{$new_on}{im_port};

    # the slow attempt: CONNECT read first, its answer 8 s away
    my $old = IM::Client->new(port => $oldport, auto_pong => 1);
    ok($old->upgraded, "$name: the old attempt's connection");
    $old->send(connect_msg("slow$uid", 'pw', role => 1, client_id => 2));
    ok(wait_until(sub {
        grep { ($_->{params}{username} // '') eq "slow$uid" } $uc->requests
    }, 20), "$name: the user centre has the old attempt");

    # the client gave up and came back: a fresh login, accepted
    my $new = IM::Client->new(port => $newport, auto_pong => 1,
        uid => $uid);
    is($new->login("u$uid", 'pw', role => 1, client_id => 2), 0,
        "$name: the newer login is accepted");

    # the old attempt is answered now
    my $ack = $old->expect(cmd => CONNECT_ACK, timeout => 30);
    ok($ack, "$name: the old attempt gets its CONNECT_ACK");
    is($ack && $ack->{code}, 1, "$name: ... 1, a duplicate that lost");

    # the live session goes on: our PING is answered, no LOGOUT before
    $new->ping;
    ok($new->expect(cmd => PING_RESP), "$name: the newer session answers");
    ok(!grep({ $_->{cmd} == LOGOUT } $new->pending),
        "$name: the newer session got no LOGOUT");

    # and gets a message sent to the uid now
    my $s = IM::Client->new(port => $newport, auto_pong => 1, auto_ack => 1,
        uid => $uid + 100);
    is($s->login('u' . ($uid + 100), 'pw'), 0, "$name: a sender logs in");
    $new->auto_ack(1);
    chat($s, $new, "$name: a message reaches the newer session");
    ok(!grep({ $_->{cmd} == LOGOUT } $new->pending),
        "$name: still no LOGOUT");

    ok(metric($oldport, 'im_stale_logins_total') >= 1,
        "$name: counted in im_stale_logins_total");

    $_->disconnect for $new, $s;
    $old->close;
}

stale_case('one node', 1301, 'a', 'a');
stale_case('two nodes', 1302, 'a', 'b');

done_testing();
