#!/usr/bin/perl
# Several workers as one server: sessions spread over two workers (the
# error log tells which worker holds which uid), 1:1 both ways across
# workers, kick across workers, with and without im_zone.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;

my @users = map { "u$_ pw$_ " . (2000 + $_) } 1 .. 16;

for my $zone (1, 0) {
    my $t = Test::Nginx->new()->has(qw/http/);
    my $redis = IM::Redis->new(t => $t);
    my $uc = IM::UserCentre->new(t => $t, users => join("\n", @users) . "\n");
    my $z = $zone ? 'im_zone im 1m;' : '';

    $t->write_file_expand('nginx.conf', <<"EOF2");
%%TEST_GLOBALS%%
worker_processes 2;
im_redis ${\ $redis->addr};
$z
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_9095%% reuseport;
        location /ws { im_websocket; im_auth /_auth; }
        ${\ $uc->auth_location }
    }
}
EOF2
    $t->run();
    my $tag = $zone ? 'zone' : 'no zone';

    my %c;
    for my $i (1 .. 16) {
        $c{$i} = IM::Client->new(port => port(9095), auto_pong => 1,
            auto_ack => 1);
        is($c{$i}->login("u$i", "pw$i"), 0, "$tag: u$i logs in");
    }

    # which worker holds each uid, from the server's own log
    my %worker;
    for (split /\n/, $t->error_log) {
        $worker{$2} = $1 if /#(\d+): .*im: uid (\d+) client \d+ logged in/;
    }
    my %pids = map { $_ => 1 } values %worker;
    is(scalar keys %pids, 2, "$tag: sessions are on both workers");

    my ($same_a, $same_b, $cross_a, $cross_b);
    for my $i (2 .. 16) {
        my ($w1, $wi) = ($worker{2001}, $worker{2000 + $i});
        if ($w1 eq $wi && !$same_b) { $same_b = $i }
        if ($w1 ne $wi && !$cross_b) { $cross_b = $i }
    }
    ok($same_b && $cross_b, "$tag: a same-worker and a cross-worker pair");

    for my $b ($same_b, $cross_b) {
        next unless $b;
        my $kind = $worker{2001} eq $worker{2000 + $b} ? 'same' : 'cross';
        my $id = $c{1}->publish(2000 + $b, "to $b");
        ok($c{1}->expect(cmd => PUB_ACK, msgid => $id), "$tag $kind: acked");
        my $m = $c{$b}->expect(cmd => PUBLISH);
        is($m && $m->{msgid}, $id, "$tag $kind: delivered");
        $id = $c{$b}->publish(2001, "back from $b");
        $m = $c{1}->expect(cmd => PUBLISH, msgid => $id);
        ok($m, "$tag $kind: delivered back");
    }

    # kick across workers: log in as u$cross_b again until the new session
    # lands on the other worker
    if ($cross_b) {
        my $old = $c{$cross_b};
        my $uid = 2000 + $cross_b;
        my $new;
        for (1 .. 20) {
            my $n = IM::Client->new(port => port(9095), auto_pong => 1);
            my $mark = length $t->error_log;
            is($n->login("u$cross_b", "pw$cross_b"), 0, "$tag: relogin");
            my ($pid) = substr($t->error_log, $mark)
                =~ /#(\d+): .*im: uid $uid client \d+ logged in/;
            $old->expect(cmd => LOGOUT, timeout => 3)
                or last;
            if ($pid ne $worker{$uid}) { $new = $n; last }
            ($old, $worker{$uid}) = ($n, $pid);
        }
        ok($new, "$tag: the older session on the other worker got LOGOUT");
        if ($new) {
            my $id = $c{1}->publish($uid, 'after kick');
            my $m = $new->expect(cmd => PUBLISH, msgid => $id);
            ok($m, "$tag: the new session receives");
        }
    }

    $t->stop();
}

Test::Nginx->done_testing();
