package IM::Failover;

# A master killed under traffic, as the Sentinel tests do it
# (t/126-redis-sentinel.t, t/130-redis-sentinel-tls.t): a sender keeps 8
# publishes in flight, in turn to a live recipient and an offline one;
# once `cut_after` are acked, the replica's link to the master is cut (a
# password its reconnection does not have; the connections made before
# keep working), so that what the master answers from then on is on no
# replica, and 0.3 s later the master dies with kill -9.  The sentinels
# promote the replica; `switched` is called once `master_port` names
# another port.  The run ends when `resume_after` messages sent after the
# kill were acked and `resume_secs` passed, or after 120 s.  Then every
# publish's answer is awaited, and what was acked is looked for at the
# live recipient, then in both recipients' inboxes (`relogin` logs a uid
# in again).
#
#   my $r = IM::Failover::run(sender => $s, live => $l, live_uid => $L,
#       offline_uid => $Y, tag => 'wait on', old => $old,
#       old_port => $old->port, master_port => \&master_port,
#       switched => sub { my ($port) = @_; ... },
#       relogin => sub { login_ok($b, $_[0]) },
#       cut_after => 200, resume_after => 100, resume_secs => 2);
#   # $r->{killed}, {switched}, {resumed} (times), {sent}, {acked},
#   # {refused}, {lost} (counts), {unanswered}, {line} (a summary)

#   IM::Failover::master_port(\@sentinels, $name)  # the port they agree on
#   IM::Failover::settled(\@sentinels, $name)      # all in good health
#   IM::Failover::login_ok($node, $uid, %o)         # (client, code)

use strict;
use warnings;

use Time::HiRes qw/time sleep/;
use Test::More ();
use IM::Proto qw/:all/;
use IM::Cluster ();
use Test::Nginx qw/wait_until/;

sub run {
    my (%o) = @_;
    my ($s, $l, $L, $Y, $tag, $old) =
        @o{qw/sender live live_uid offline_uid tag old/};

    my (%sent, %answer, %got);
    my ($seq, $inflight, $t_cut, $t_kill, $t_switch, $resumed, $after) =
        (0, 0, undef, undef, undef, undef, 0);
    my $deadline = time + 120;

    while (time < $deadline) {
        while ($inflight < 8) {
            my $to = $seq++ % 2 ? $Y : $L;
            my $id = $s->publish($to, "$tag $seq");
            $sent{$id} = [$to, time];
            $inflight++;
        }

        my $refusals = 0;
        while (my $m = $s->next(timeout => 0.02)) {
            my $id = $m->{msgid};
            next unless defined $id && $sent{$id} && !$answer{$id};
            if ($m->{cmd} == PUB_ACK) {
                $answer{$id} = 'ack';
                if ($t_kill && $sent{$id}[1] > $t_kill) {
                    $resumed //= time;
                    $after++;
                }
            } elsif ($m->{cmd} == INVALID_PACKET) {
                $answer{$id} = 'refused';
                $refusals++;
            } else {
                next;
            }
            $inflight--;
        }
        $got{$_->{msgid}}++ for grep { $_->{cmd} == PUBLISH } $l->drain(0.01);
        sleep 0.02 if $refusals;

        if (!$t_cut && (grep { $_ eq 'ack' } values %answer) >= $o{cut_after})
        {
            eval {
                $old->cmd(CONFIG => 'SET', 'requirepass', 'cut-the-link');
                $old->cmd(CLIENT => 'KILL', 'TYPE', 'replica');
            };
            $t_cut = time;
        }

        if ($t_cut && !$t_kill && time - $t_cut >= 0.3) {
            $old->kill9;
            $t_kill = time;
            Test::More::note("$tag: the master (port $o{old_port}) killed");
        }

        if ($t_kill && !$t_switch) {
            my $p = $o{master_port}->();
            if (defined $p && $p != $o{old_port}) {
                $t_switch = time;
                Test::More::note(sprintf("$tag: the sentinels switched to "
                    . 'port %d after %.1f s', $p, $t_switch - $t_kill));
                $o{switched}->($p);
            }
        }

        last if $resumed && $after >= $o{resume_after}
            && time - $resumed > $o{resume_secs};
    }

    # every publish gets its answer
    my $dl = time + 20;
    while ($inflight > 0 && time < $dl) {
        my $m = $s->next(timeout => 1) or next;
        my $id = $m->{msgid};
        next unless defined $id && $sent{$id} && !$answer{$id};
        next unless $m->{cmd} == PUB_ACK || $m->{cmd} == INVALID_PACKET;
        $answer{$id} = $m->{cmd} == PUB_ACK ? 'ack' : 'refused';
        $inflight--;
    }

    my @acked = grep { ($answer{$_} // '') eq 'ack' } keys %sent;
    my @refused = grep { ($answer{$_} // '') eq 'refused' } keys %sent;

    # the live recipient: what it was pushed, then both inboxes at a login
    my @for_l = grep { $sent{$_}[0] == $L } @acked;
    $dl = time + 10;
    while (time < $dl && grep { !$got{$_} } @for_l) {
        $got{$_->{msgid}}++ for grep { $_->{cmd} == PUBLISH } $l->drain(0.2);
    }
    $l->close(1000);
    my ($l2) = $o{relogin}->($L);
    my ($y) = $o{relogin}->($Y);
    my @for_y = grep { $sent{$_}[0] == $Y } @acked;
    $dl = time + 20;
    while (time < $dl && grep { !$got{$_} } @for_l, @for_y) {
        for my $c (grep { $_ } $l2, $y) {
            $got{$_->{msgid}}++
                for grep { $_->{cmd} == PUBLISH } $c->drain(0.2);
        }
    }
    $_->close(1000) for grep { $_ } $l2, $y;

    my $lost = grep { !$got{$_} } @acked;
    my %r = (killed => $t_kill, switched => $t_switch, resumed => $resumed,
        sent => scalar(keys %sent), acked => scalar(@acked),
        refused => scalar(@refused), lost => $lost,
        unanswered => $inflight);
    $r{line} = sprintf('%s: %d published, %d acked, %d refused; acked and '
        . 'never delivered: %d; service resumed %.1f s after the kill '
        . '(sentinels switched after %.1f s)', $tag, $r{sent}, $r{acked},
        $r{refused}, $lost, ($resumed // time) - ($t_kill // time),
        ($t_switch // time) - ($t_kill // time));
    return \%r;
}

# what every sentinel says of the master: its port, when they agree
sub master_port {
    my ($sentinels, $name) = @_;
    my %p;
    for my $s (@$sentinels) {
        my $a = eval { $s->cmd(SENTINEL => 'get-master-addr-by-name', $name) };
        return undef unless ref $a eq 'ARRAY';
        $p{$a->[1]} = 1;
    }
    return keys %p == 1 ? (keys %p)[0] : undef;
}

# the sentinels know each other and a replica in good health
sub settled {
    my ($sentinels, $name) = @_;
    for my $s (@$sentinels) {
        my $m = eval { $s->cmd(SENTINEL => 'master', $name) } or return 0;
        my %m = @$m;
        return 0 unless $m{flags} eq 'master'
            && $m{'num-other-sentinels'} == @$sentinels - 1
            && $m{'num-slaves'} >= 1;
        my $r = eval { $s->cmd(SENTINEL => 'replicas', $name) } or return 0;
        return 0 unless grep {
            my %r = @$_;
            $r{flags} eq 'slave' && $r{'master-link-status'} eq 'ok'
        } @$r;
    }
    return 1;
}

# a login, tried again while the node has no master yet (code 2)
sub login_ok {
    my ($n, $uid, %o) = @_;
    my ($c, $code);
    wait_until(sub {
        ($c, $code) = IM::Cluster::login($n, $uid, %o);
        return 1 if defined $code && $code == 0;
        $c->close if $c;
        sleep 0.2;
        return 0;
    }, 30);
    return ($c, $code);
}

1;
