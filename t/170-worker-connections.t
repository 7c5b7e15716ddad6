#!/usr/bin/perl
# A worker full to its worker_connections (issue 21 item 1). When a worker
# runs short, nginx closes connections from its reusable queue (those
# waiting for a request: "worker_connections are not enough, reusing
# connections"), and when none is left it closes what it accepts
# ("worker_connections are not enough", an alert). A logged-in session must
# never be in that queue: here 24 WebSocket and 4 TCP API sessions log in
# first (the oldest connections, the first nginx would reuse), then idle
# connections that send nothing and more logins fill the worker past its
# 64 connections. Every logged-in session survives and its messages flow,
# while idle connections are reused and new ones turned away, and both
# are in the error log where an operator sees them.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Setup qw/standard/;
use IO::Socket::INET;
use Errno qw/EAGAIN EWOULDBLOCK/;

my $WC = 64;
my ($t, $redis, $uc) = standard(
    users => "* * uid-from-name\n",
    events => "worker_connections $WC;",
    # idle connections wait for their request longer than this file runs
    http => "client_header_timeout 300s;",
    main => "im_ping_interval 300s;\nim_repush_interval 60s;");
# the point of the test: the worker refuses connections
$t->allow_alerts(qr/\b$WC worker_connections are not enough\b/);

# one worker holds 7 connections of its own: 3 listeners, its channel to
# the master, 3 to Redis; 28 sessions bring it to 35 of 64
my $NWS = 24;
my $NTCP = 4;
my (@ws, @api);
for my $i (1 .. $NWS) {
    my $c = IM::Client->new(port => port(9095), auto_pong => 1);
    is($c->login("user$i", 'pw'), 0, "user$i logs in") or last;
    push @ws, $c;
}
for my $i (1 .. $NTCP) {
    my $api = IM::TCP->new(port => port(19095));
    my $id = msgid();
    $api->send_msg(publish_msg(1, $id, "api$i"));
    my $r = $api->recv_decoded(10);
    ok($r && $r->{cmd} == PUB_ACK, "API session $i is served");
    push @api, $api;
}
ok($ws[0]->expect(cmd => PUBLISH), "user1 has API message $_")
    for 1 .. $NTCP;

# 40 connections that never send a request: nginx's reusable queue
my $mark = $t->log_mark;
my @idle;
for (1 .. 40) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => port(9095), Proto => 'tcp') or last;
    $s->blocking(0);
    push @idle, $s;
}
is(scalar @idle, 40, '40 idle connections opened');

# more logins than the worker has room for; nginx takes them in the order
# they were opened, after the idle ones
my ($in, $out) = (0, 0);
my @extra;
for my $i (101 .. 130) {
    my $c = eval { IM::Client->new(port => port(9095), auto_pong => 1,
        timeout => 10) };
    my $code = $c ? $c->login("user$i", 'pw', timeout => 10) : undef;
    if (defined $code && $code == 0) {
        $in++;
        push @extra, $c;
    } else {
        $out++;
    }
}
diag("of 30 more logins $in were let in, $out turned away");
ok($out > 0, 'logins past worker_connections are turned away');

sub closed {
    my ($s) = @_;
    my $n = sysread($s, my $buf, 1);
    return !(!defined $n && ($! == EAGAIN || $! == EWOULDBLOCK));
}
my $reused;
ok(wait_until(sub { $reused = grep { closed($_) } @idle; $reused > 0 }, 10),
    'idle connections were closed to make room');
diag("$reused of 40 idle connections reused");

my $log = $t->error_log($mark);
like($log, qr/$WC worker_connections are not enough, reusing connections/,
    'the reuse is in the error log');
# turned away at accept (no connection for the client) or at the login
# (none for the user centre's request, CONNECT_ACK 2): an alert each; a
# connection still waiting for its handshake may be reused instead
my $alerts = () =
    $log =~ /\[alert\][^\n]*\b$WC worker_connections are not enough/g;
ok($alerts >= 1, 'the refusals are in the error log');
diag("$alerts alerts");
unlike($log, qr/im redis: connection \d+ (?:lost|timed out)/,
    'the Redis connections stayed');

# while the worker is full, every logged-in session is there and served
my $bad = 0;
for my $i (0 .. $#ws) {
    my $to = $ws[($i + 1) % @ws];
    my $id = $ws[$i]->publish(0 + ($i + 1) % @ws + 1, "m$i");
    my $ack = $ws[$i]->expect(cmd => PUB_ACK, msgid => $id);
    my $m = $to->expect(cmd => PUBLISH);
    $bad++ unless $ack && $m && $m->{msgid} eq $id;
    $to->ack($id) if $m;
}
is($bad, 0, "all $NWS WebSocket sessions still send and receive");
$bad = 0;
for my $i (0 .. $#api) {
    my $id = msgid();
    $api[$i]->send_msg(publish_msg(2, $id, "again$i"));
    my $r = $api[$i]->recv_decoded(10);
    $bad++ unless $r && $r->{cmd} == PUB_ACK;
}
is($bad, 0, "all $NTCP TCP API sessions still served");
is(scalar(grep { $ws[1]->expect(cmd => PUBLISH) } 1 .. $NTCP), $NTCP,
    'user2 has the API messages');

# room again: the count of sessions says none of the first ones went
close $_ for @idle;
$_->close(1000) for @extra;
$_->wait_closed for @extra;
my $st;
ok(wait_until(sub {
    my $r = http_get('/metrics', port => port(9095)) // '';
    $st = $r;
    $r =~ /^im_sessions\{transport="ws"\} $NWS$/m
        && $r =~ /^im_sessions\{transport="tcp"\} $NTCP$/m;
}, 20), "the node still holds exactly the $NWS + $NTCP sessions")
    or diag(join "\n", grep { /^im_sessions/ } split /\n/, $st // '');
like($st, qr/^im_kicks_total 0$/m, 'nobody was kicked');

$t->done_testing;
