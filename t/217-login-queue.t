#!/usr/bin/perl
# Logins in flight are bounded per worker (decision 042): im_logins_in_flight
# logins ask the user centre at once, the CONNECTs beyond wait in order, at
# most im_login_queue_timeout, and are answered CONNECT_ACK 2 ("try later")
# when their time is up. The queue is in /metrics.
#   1. node a, one worker, 2 in flight, 60 s of queue: 6 CONNECTs at once to
#      a user centre that answers each 2 s late. The user centre gets them
#      two by two (the third and the fifth only after an answer), every one
#      is accepted, 4 waited (im_login_queued_total), and im_login_queue
#      showed them waiting meanwhile.
#   2. node b, one worker, 1 in flight, 1 s of queue: one login the user
#      centre holds 30 s, a second CONNECT waits its second and gets
#      CONNECT_ACK 2 (im_login_queue_timeouts_total); when the held client
#      goes, its place is free: a third login is answered at once.
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
use IM::Cluster;

my $t0 = Test::Nginx->new()->has(qw/http redis/);
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => join '',
    map({ "q$_ pw delay:2:$_\n" } 1401 .. 1406),
    "held pw delay:30:1411\n", "* * uid-from-name\n");

my %node;
for my $n (['a', 9095, 2, '60s'], ['b', 9096, 1, '1s']) {
    my $t = IM::Cluster::node(name => $n->[0], port => $n->[1],
        redis => $redis, uc => $uc, workers => 1,
        timers => { im_ping_interval => '300s', im_close_grace => '1s',
                    im_logins_in_flight => $n->[2],
                    im_login_queue_timeout => $n->[3] },
        locations => 'location = /metrics { im_metrics; }');
    $t->run();
    $node{$n->[0]} = $t;
}

sub metric {
    my ($t, $name) = @_;
    my $r = http_get('/metrics', port => $t->{im_port}) // '';
    return $r =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

# when the user centre was asked for the user names matching $re, in order
sub asked {
    my ($re) = @_;
    my @at = sort { $a <=> $b } map { $_->{time} }
        grep { ($_->{params}{username} // '') =~ $re } $uc->requests;
    return @at;
}

sub times_asked {
    my @at = asked(@_);
    return scalar @at;
}

# -- 1. six at once, two in flight
{
    my $a = $node{a};
    my @c = map { IM::Client->new(port => $a->{im_port}, auto_pong => 1) }
        1401 .. 1406;
    ok(!grep({ !$_->upgraded } @c), 'six connections upgraded');
    my $i = 1401;
    $_->send(connect_msg('q' . $i++, 'pw')) for @c;

    my $seen = wait_until(sub { (metric($a, 'im_login_queue') // 0) > 0 },
        20);
    ok($seen, 'im_login_queue shows CONNECTs waiting');
    ok((metric($a, 'im_logins_in_flight') // 9) <= 2,
        'im_logins_in_flight at most 2');

    my @codes = map {
        my $m = $_->expect(cmd => CONNECT_ACK, timeout => 60);
        $m ? $m->{code} : 'none'
    } @c;
    is("@codes", '0 0 0 0 0 0', 'every login is accepted');
    is(metric($a, 'im_login_queued_total'), 4, '4 of them waited');
    is(metric($a, 'im_login_queue'), 0, 'the queue is empty after');
    is(metric($a, 'im_logins_in_flight'), 0, 'nothing in flight after');

    my @at = asked(qr/^q14\d\d$/);
    is(scalar @at, 6, 'the user centre was asked 6 times');
    ok(@at == 6 && $at[2] - $at[0] >= 1.5 && $at[4] - $at[2] >= 1.5,
        'two at a time: the 3rd and 5th came after an answer: '
        . join(' ', map { sprintf '%.2f', $_ - $at[0] } @at));

    $_->disconnect for @c;
}

# -- 2. one in flight, a second that waits too long
{
    my $b = $node{b};
    my $held = IM::Client->new(port => $b->{im_port}, auto_pong => 1);
    $held->send(connect_msg('held', 'pw'));
    ok(wait_until(sub { times_asked(qr/^held$/) }, 20),
        'the held login is at the user centre');

    my $late = IM::Client->new(port => $b->{im_port}, auto_pong => 1);
    $late->send(connect_msg('u1412', 'pw'));
    my $m = $late->expect(cmd => CONNECT_ACK, timeout => 20);
    is($m && $m->{code}, 2, 'the waiting login is answered 2 after its second');
    is(metric($b, 'im_login_queue_timeouts_total'), 1,
        'im_login_queue_timeouts_total');
    is(times_asked(qr/^u1412$/), 0, '... without asking the user centre');
    $late->close;

    # the held client gives up: its place goes to the next
    $held->close;
    ok(wait_until(sub { (metric($b, 'im_logins_in_flight') // 1) == 0 }, 20),
        'the closed login left the flight');
    my $next = IM::Client->new(port => $b->{im_port}, auto_pong => 1);
    is($next->login('u1413', 'pw', timeout => 20), 0,
        'the next login is answered');
    $next->disconnect;
}

done_testing();
