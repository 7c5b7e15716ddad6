#!/usr/bin/perl
# Devices that close and log in back to back while a sender keeps sending
# (docs/GUIDE.md 3, what offline_only can lose). alice sends to bob without
# pause from one connection; bob has one device at a time: the next one's
# WebSocket is open before the previous closes (cleanly, by DISCONNECT, or
# by a reset, in turn), and its CONNECT leaves right after the close, on
# ClientIds 1..4, on whichever worker reuseport gives it. Every push is
# acked at once. At the end one more device drains the inbox. Every
# message alice had a PUB_ACK for must have reached some bob device: in
# write_through and in offline_only, with 2 and with 4 workers.
#
#   IM_CHURN_SECONDS (default 12) is how long each run churns.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use Time::HiRes qw/time sleep/;

my $SECONDS = $ENV{IM_CHURN_SECONDS} // 12;

my @users = ('alice pw-a 5001', 'bob pw-b 5002');

sub id { sprintf '%032d', $_[0] }

# alice: publish, read what came back, until the time is up; returns the
# acked sequence numbers
sub sender {
    my ($port, $seconds, $file) = @_;
    my $c = IM::Client->new(port => $port, auto_pong => 1);
    my $code = $c->login('alice', 'pw-a', uid => 5001);
    die "alice login: " . ($code // 'none') . "\n" unless defined $code
        && $code == 0;
    my (%acked, $refused);
    my ($n, $end) = (0, time + $seconds);
    my $want = sub {
        my ($t) = @_;
        while (my $m = $c->next(timeout => $t)) {
            $t = 0.0001;
            if ($m->{cmd} == PUB_ACK) {
                $acked{$m->{msgid} + 0} = 1;
            } elsif ($m->{cmd} == INVALID_PACKET) {
                $refused++;
            }
        }
    };
    while (time < $end) {
        # a few at a time: several messages per loop pass of the server
        for (1 .. 1 + int rand 3) {
            $n++;
            $c->publish(5002, "m$n", msgid => id($n));
        }
        $want->(0.0005);
    }
    my $last = time + 15;
    while (scalar(keys %acked) + ($refused // 0) < $n && time < $last) {
        $want->(0.2);
    }
    open my $fh, '>', $file or die "$file: $!";
    print $fh join("\n", "sent $n", "refused " . ($refused // 0),
        sort { $a <=> $b } keys %acked), "\n";
    close $fh;
}

sub bob_device {
    my ($port, $k) = @_;
    return IM::Client->new(port => $port, auto_pong => 1, auto_ack => 1);
}

for my $case (['offline_only', 2], ['offline_only', 4],
              ['write_through', 2])
{
    my ($mode, $workers) = @$case;
    my $tag = "$mode, $workers workers";
    next if $ENV{IM_CHURN_ONLY} && $tag !~ /$ENV{IM_CHURN_ONLY}/;

    my $t = Test::Nginx->new()->has(qw/http/);
    my $redis = IM::Redis->new(t => $t);
    my $uc = IM::UserCentre->new(t => $t, users => join("\n", @users) . "\n");

    $t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
worker_processes $workers;
im_redis ${\ $redis->addr};
im_zone im 1m;
im_delivery $mode;
# bob's devices ack at once, but a loaded machine can leave one unread
# for a while: no re-push or missed ping may close a session here
im_repush_interval 10s;
im_ping_interval 300s;
im_close_grace 1s;
# devices that live for milliseconds drain the inbox more slowly than a
# closing one fills it: no cap may drop what was acknowledged here
im_offline_max 1000000;
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

    my $file = $t->testdir . "/acked-$workers-$mode";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        sender(port(9095), $SECONDS, $file);
        exit 0;
    }

    my (%got, $devices, $resets);
    my $record = sub {
        my ($m) = @_;
        $got{$m->{msgid} + 0} = 1
            if $m->{cmd} == PUBLISH && $m->{msgid} =~ /^\d+$/;
    };

    my $cur;
    my $end = time + $SECONDS;
    my $k = 0;
    while (time < $end) {
        my $next = bob_device(port(9095));
        next unless $next->upgraded;
        if ($cur) {
            # what came before the close counts (it was acked)
            $record->($_) for $cur->drain(0);
            if ($k % 2) {
                $cur->ws->abort;
                $resets++;
            } else {
                $cur->disconnect;
                $cur->close;
            }
        }
        $k++;
        my $code = $next->login('bob', 'pw-b', uid => 5002,
            client_id => 1 + $k % 4);
        next unless defined $code && $code == 0;
        $devices++;
        $cur = $next;
        $record->($_) for $cur->drain(0.005 + rand 0.05);
    }

    waitpid $pid, 0;
    is($?, 0, "$tag: alice sent and counted her acks");

    note("$tag: the inbox holds " . ($redis->cmd(LLEN => 'im:inbox:5002')
        // '?') . " before the drain");

    # the last device reads what is left
    if ($cur) {
        $record->($_) for $cur->drain(0);
    }
    $cur->disconnect if $cur;
    undef $cur;
    my $last = IM::Client->new(port => port(9095), auto_pong => 1,
        auto_ack => 1);
    # (a busy machine may have left thousands in the inbox)
    is($last->login('bob', 'pw-b', uid => 5002, client_id => 9,
        timeout => 30), 0, "$tag: the draining device logs in");
    while (my $m = $last->next(timeout => 5)) {
        $record->($m);
    }

    open my $fh, '<', $file or die "$file: $!";
    my ($sent) = <$fh> =~ /(\d+)/;
    my ($refused) = <$fh> =~ /(\d+)/;
    chomp(my @acked = <$fh>);
    close $fh;

    my @lost = grep { !$got{$_} } @acked;
    note("$tag: $sent sent, " . scalar(@acked) . " acked, $refused "
        . "refused, " . scalar(keys %got) . " received over $devices "
        . "devices, " . ($resets // 0) . " closed by reset");
    ok($devices > 10, "$tag: bob's devices came and went ($devices)");
    ok(@acked > 1000, "$tag: alice's messages were acked (" . @acked . ")");
    is(scalar @lost, 0, "$tag: no acknowledged message lost")
        or diag("lost: @lost[0 .. ($#lost < 20 ? $#lost : 19)]");

    $t->stop();
}

Test::Nginx->done_testing();
