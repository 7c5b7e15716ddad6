#!/usr/bin/perl
# The directory of im_zone past its first bucket array (1,024 buckets,
# doubled once entries outnumber them, every entry moved): each uid is
# still found after the move, when a second login of it on either worker
# joins or replaces its entry, and when its sessions end (the count of
# the node's users comes back to 0, not to what a lost entry would leave).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf status/;

my $N = 1200;    # past 1,024: one doubling

my $t = Test::Nginx->new()->has(qw/http/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => "* pw uid-from-name\n");

write_conf($t, redis => $redis, uc => $uc, stream => 0, workers => 2,
    main => 'im_zone im 1m;', events => 'worker_connections 2048;');
$t->run();

my (%c, $failed);
for my $i (1 .. $N) {
    my $c = IM::Client->new(port => port(9095), auto_pong => 1);
    my $code = $c->login(30000 + $i, 'pw');
    if (!defined $code || $code != 0) {
        $failed = $i;
        last;
    }
    $c{$i} = $c;
}
ok(!$failed, "$N uids log in") or diag("login $failed failed");
ok(wait_until(sub { (status()->{node_users} // -1) == $N }),
    "the zone lists $N uids")
    or diag('node_users: ' . (status()->{node_users} // 'none'));

# a uid logged in again (a new session of the same client replaces the
# old one, on whichever worker it lands): its entry is found, not made
# twice, before and after the doubling
my $relogged = 0;
for my $i (1, 2, 500, 1024, 1100 .. 1119, $N) {
    my $n = IM::Client->new(port => port(9095), auto_pong => 1);
    my $code = $n->login(30000 + $i, 'pw');
    next unless defined $code && $code == 0;
    $c{$i}->expect(cmd => LOGOUT, timeout => 5);
    $c{$i}->close(1000);
    $c{$i} = $n;
    $relogged++;
}
is($relogged, 25, 'uids logged in again');
ok(wait_until(sub { (status()->{node_users} // -1) == $N }),
    "the zone still lists $N uids")
    or diag('node_users: ' . (status()->{node_users} // 'none'));

# messages still flow, to uids placed before and after the doubling
my $from = $c{1};
for my $i (2, 1024, $N) {
    my $id = $from->publish(30000 + $i, "to $i");
    ok($from->expect(cmd => PUB_ACK, msgid => $id), "to $i: acked");
    ok($c{$i}->expect(cmd => PUBLISH, msgid => $id), "to $i: delivered");
}

# every entry is found again when its uid leaves
$_->close(1000) for values %c;
ok(wait_until(sub { (status()->{node_users} // -1) == 0 }, 30),
    'the zone lists no uid once all left')
    or diag('node_users: ' . (status()->{node_users} // 'none'));

$t->done_testing();
