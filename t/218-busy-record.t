#!/usr/bin/perl
# What only a busy session holds lives in a record it takes when something
# is under way and gives back when all of it is empty again (decision 044):
# /metrics' im_sessions_busy counts the sessions holding one.
#   - idle sessions, logged in and their inboxes read, hold none;
#   - a session with a push unacknowledged holds one (its queue, its
#     re-push), and one that answers a publish holds one until the answer
#     is out; acked and answered, they give it back;
#   - a client that never acks, re-pushed and ended at im_repush_max, and a
#     client that disconnects with a push in flight: nothing stays held
#     (the session's end alerts if its record is still taken, and the
#     harness fails the test on any alert);
#   - the same over TLS (wss) and the TCP API, whose output is written
#     from their own buffers.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Setup qw/standard ssl_opts/;

my $users = join '', map { "u$_ p$_ " . (2000 + $_) . "\n" } 1 .. 20;
$users .= "alice alice-secret 1001\nbob bob-secret 1002\n";

# short re-push and ping timers (the re-push event goes a period after
# the last ack), a PING every 2 s: idle sessions are written to, and give
# their record back after each PING_RESP's output is out
my ($t, $redis, $uc) = standard(
    users => $users,
    main => "im_repush_interval 1s;\nim_repush_max 3;\n"
          . "im_ping_interval 2s;\nim_ping_timeout 30s;");

sub busy {
    my $r = http_get('/metrics', port => port(9095)) // '';
    my ($v) = $r =~ /^im_sessions_busy (\d+)$/m;
    return $v;
}

my @idle;

# the idle clients answer their PINGs while a test waits
sub pong { $_->drain(0.01) for @idle }

sub settles_at {
    my ($n, $what) = @_;
    my $last;
    ok(wait_until(sub {
        pong();
        $last = busy();
        return defined $last && $last == $n;
    }, 30), $what) or diag("im_sessions_busy: " . ($last // 'none'));
}

# 20 idle sessions, half over TLS; PINGs answered
for my $i (1 .. 20) {
    my $c = $i % 2
        ? IM::Client->new(port => port(9095), auto_pong => 1)
        : IM::Client->new(port => port(8443), path => '/wss', ssl => 1,
            ssl_opts => ssl_opts(), auto_pong => 1);
    is($c->login("u$i", "p$i"), 0, "u$i logs in") or last;
    push @idle, $c;
}

settles_at(0, 'logged in and idle: no session holds a busy record');

# a push that bob does not ack: his session holds a record
my $alice = IM::Client->new(port => port(9095), auto_pong => 1);
is($alice->login('alice', 'alice-secret'), 0, 'alice logs in');
my $bob = IM::Client->new(port => port(8443), path => '/wss', ssl => 1,
    ssl_opts => ssl_opts(), auto_pong => 1);
is($bob->login('bob', 'bob-secret'), 0, 'bob logs in over wss');

my $id = $alice->publish(1002, 'hold this');
ok($alice->expect(cmd => PUB_ACK, msgid => $id), 'alice is acked');
my $m = $bob->expect(cmd => PUBLISH);
ok($m && $m->{msgid} eq $id, 'bob gets the push, and does not ack it');

my $held;
ok(wait_until(sub { pong(); $held = busy() // 0; $held >= 1 }, 30),
    'a push in flight: a record is held') or diag("busy: $held");

$bob->ack($id);
settles_at(0, 'acked (and the re-push event gone): none held');

# the TCP API's output (a PUB_ACK per message) and its end
my $api = IM::TCP->new(port => port(19095));
for my $n (1 .. 3) {
    my $mid = msgid();
    $api->send_msg(publish_msg(1001, $mid, "api $n"));
    my $r = $api->recv_decoded(10);
    ok($r && $r->{cmd} == PUB_ACK, "API message $n acked");
    my $p = $alice->expect(cmd => PUBLISH);
    ok($p && $p->{msgid} eq $mid, "alice gets API message $n");
    $alice->ack($mid);
}
settles_at(0, 'API answers out, alice acked: none held');

# a client that never acks is re-pushed, then ended at im_repush_max
$id = $alice->publish(1002, 'never acked');
ok($alice->expect(cmd => PUB_ACK, msgid => $id), 'alice is acked again');
my $pushes = 0;
ok(wait_until(sub {
    pong();
    my $p = $bob->next(timeout => 0.5);
    $pushes++ if $p && $p->{cmd} == PUBLISH && $p->{msgid} eq $id;
    return defined $bob->close_code || $bob->is_closed;
}, 60), 'bob, never acking, is ended after his re-pushes')
    or diag("pushes seen: $pushes");

# a client gone with a push in flight
my $bob2 = IM::Client->new(port => port(9095), auto_pong => 1);
is($bob2->login('bob', 'bob-secret'), 0, 'bob logs in again');
$m = $bob2->expect(cmd => PUBLISH);
ok($m && $m->{msgid} eq $id, 'the unacked message comes again');
$bob2->ws->abort;

$api->close;
settles_at(0, 'ended with pushes in flight, API gone: none held');

my $ok = grep { !$_->is_closed } @idle;
is($ok, 20, 'the idle sessions are all still up');

$t->done_testing;
