#!/usr/bin/perl
# A new device gets its uid's messages in the order the server accepted
# them (docs/PROTOCOL.md 3.4), also when it logs in during a stream of
# messages while another device of the user holds the uid on another
# worker or node. alice sends to bob without pause, and bob's device 1
# acks every push, both from one process. Meanwhile bob's device 2 logs
# in, again and again, on whichever worker or node it reaches, reads for
# a moment and leaves (DISCONNECT, then the server's close). Every device-2 session must see its first copies
# of alice's messages in increasing order (alice numbers them; she sends
# them over one connection, so that is the order of acceptance): the
# count of inversions must be 0. Each case: write_through and
# offline_only; two workers of one node, and two nodes of one worker
# each.
#
#   IM_ORDER_SECONDS (default 10) is how long each case runs.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Cluster qw/node/;
use IM::Proto qw/:all/;
use Time::HiRes qw/time sleep/;

my $SECONDS = $ENV{IM_ORDER_SECONDS} // 10;

my %TIMERS = (
    # a loaded machine can leave device 1 unread for a while: no re-push
    # or missed ping may close it
    im_repush_interval => '10s',
    im_ping_interval   => '300s',
    im_close_grace     => '1s',
);

sub id { sprintf '%032d', $_[0] }

# alice and bob's device 1, until the time is up
sub stream {
    my ($port, $seconds) = @_;
    my $alice = IM::Client->new(port => $port, auto_pong => 1);
    my $one = IM::Client->new(port => $port, auto_pong => 1, auto_ack => 1);
    $alice->login('u5001', 'pw', uid => 5001) == 0 or die "alice\n";
    $one->login('u5002', 'pw', uid => 5002, client_id => 1) == 0
        or die "bob 1\n";
    my ($n, $end) = (0, time + $seconds);
    while (time < $end) {
        for (1 .. 1 + int rand 3) {
            $n++;
            $alice->publish(5002, "m$n", msgid => id($n));
        }
        while ($alice->next(timeout => 0.0003)) { }
        while ($one->next(timeout => 0.0003)) { }
    }
    # device 1 reads what is still coming before it goes
    1 while $one->next(timeout => 0.5);
}

sub run_case {
    my ($tag, $stream_port, @ports) = @_;
    return if $ENV{IM_ORDER_ONLY} && $tag !~ /$ENV{IM_ORDER_ONLY}/;

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        eval { stream($stream_port, $SECONDS) };
        exit($@ ? 1 : 0);
    }
    sleep 0.3;

    my ($logins, $inversions, $pushes, @examples) = (0, 0, 0);
    my $end = time + $SECONDS - 0.5;
    my $k = 0;
    while (time < $end) {
        my $port = $ports[$k++ % @ports];
        my $two = IM::Client->new(port => $port, auto_pong => 1,
            auto_ack => 1);
        my $code = $two->login('u5002', 'pw', uid => 5002, client_id => 2);
        next unless defined $code && $code == 0;
        $logins++;
        my ($last, %seen, @order) = (0);
        my $until = time + 0.05 + rand 0.1;
        while (my $m = $two->next(timeout => $until - time)) {
            next unless $m->{cmd} == PUBLISH && $m->{msgid} =~ /^\d+$/;
            my $seq = $m->{msgid} + 0;
            next if $seen{$seq}++;
            $pushes++;
            push @order, $seq;
            if ($seq < $last) {
                $inversions++;
                push @examples, "login $logins: "
                    . "@order[($#order > 5 ? $#order - 5 : 0) .. $#order]"
                    if @examples < 5;
            }
            $last = $seq if $seq > $last;
        }
        # leaves, and the server has let it go (in offline_only a session
        # that ends stores what it was given and did not ack: a device
        # logging in before that is stored reads it later, behind newer
        # ones; docs/decisions/040)
        $two->disconnect;
        $two->wait_closed(10);
        $two->close;
    }
    waitpid $pid, 0;
    is($?, 0, "$tag: alice and device 1 streamed");
    note("$tag: $logins logins of device 2, $pushes first copies, "
        . "$inversions inversions");
    ok($logins > 10, "$tag: device 2 logged in often ($logins)");
    ok($pushes > 100, "$tag: device 2 got messages ($pushes)");
    is($inversions, 0, "$tag: device 2 got them in the order accepted")
        or diag("e.g. (last five seen): " . join ' | ', @examples);
}

my @users = map { "u$_ pw $_" } 5001, 5002;

for my $mode (qw/offline_only write_through/) {
    # two workers of one node
    {
        my $t = Test::Nginx->new()->has(qw/http/);
        my $redis = IM::Redis->new(t => $t);
        my $uc = IM::UserCentre->new(t => $t,
            users => join("\n", @users) . "\n");
        my $timers = join "\n", map { "$_ $TIMERS{$_};" } sort keys %TIMERS;
        $t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
worker_processes 2;
im_redis ${\ $redis->addr};
im_zone im 1m;
im_delivery $mode;
$timers
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_9095%% reuseport;
        location /ws { im_websocket; im_auth /_auth; }
        ${\ $uc->auth_location }
    }
}
EOF
        $t->run();
        run_case("$mode, 2 workers", port(9095), port(9095));
        $t->stop();
    }

    # two nodes of one worker each, on one Redis
    {
        my $t0 = Test::Nginx->new()->has(qw/http/);
        my $redis = IM::Redis->new(t => $t0);
        my $uc = IM::UserCentre->new(t => $t0,
            users => join("\n", @users) . "\n");
        my @nodes = map {
            node(name => $_->[0], port => $_->[1], redis => $redis,
                uc => $uc, workers => 1, delivery => $mode,
                timers => \%TIMERS)
        } ['a', 9095], ['b', 9096];
        $_->run() for @nodes;
        # device 2 on the other node, then on the same one, in turn
        run_case("$mode, 2 nodes", port(9095), port(9096), port(9095));
        $_->stop() for @nodes;
    }
}

Test::Nginx->done_testing();
