#!/usr/bin/perl
# Reload and binary upgrade during traffic (issue 4 item 3, Tests;
# docs/PROTOCOL.md §3.5, §5): one nginx, two workers, im_zone, reuseport.
#
# 1. nginx -s reload with a long worker_shutdown_timeout: sessions made
#    before the reload stay on the old workers and keep working; logins made
#    after it go to the new workers; messages flow both ways between old and
#    new sessions (the zone survives the reload); a login on a new worker
#    kicks the old-worker session of that uid; a burst sent across the
#    reload and messages to an offline user are all delivered; the old
#    workers exit once their sessions are closed.
# 2. worker_shutdown_timeout 2s: when it runs out, old sessions get
#    DISCONNECT <<9>> and a close 1001, then the server closes the TCP
#    connection; logging in again (on a new worker) brings what was pending.
# 3. Binary upgrade: USR2 to the master (a new master, same binary, is
#    started; nginx.pid.oldbin holds the old one), then QUIT to the old
#    master: old sessions keep working until worker_shutdown_timeout,
#    chatting with sessions of the new master; logins go to the new
#    master's workers; nothing acked is lost.
#    Observed: the new master is a fresh exec, so its im_zone is a new
#    shared-memory segment with its own instance id; its workers' ids
#    (node/instance:pid) differ from the old generation's in the node part,
#    so the two generations reach each other through Redis pub/sub as two
#    nodes would. Between USR2 and QUIT both generations accept on the
#    inherited listeners. The harness finds the new master by itself:
#    stop() reads nginx.pid (rewritten by the new master); master_pid and
#    worker_pids keep naming the old one, so the test reads nginx.pid and
#    the new master's children itself.
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
use Time::HiRes qw/sleep time/;

my $t0 = Test::Nginx->new()->has(qw/http redis/);    # holds the helpers
my $redis = IM::Redis->new(t => $t0);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");

sub instance {
    my (%o) = @_;
    my $t = Test::Nginx->new()->has(qw/http redis/);
    $t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 2;
worker_shutdown_timeout $o{wst};
im_redis ${\ $redis->addr};
im_zone im 1m;
# quiet pings: a client the test does not read for a while cannot answer a
# PING, and a loaded machine can make that "while" longer than interval +
# timeout; no check here is about pings
im_ping_interval 300s;
im_ping_timeout 5s;
# quiet re-push: u1102 / u1202 hold unacked pushes across the reload and the
# upgrade (delivered at their next login, not re-pushed), and a session
# acking late (a loaded machine) must not be re-pushed into the checks
im_repush_interval 60s;
im_repush_max 6;
im_close_grace 1s;
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_$o{port}%% reuseport;
        location /ws { im_websocket; im_auth /_auth; }
        location = /status { im_status; }
        ${\ $uc->auth_location }
    }
}
EOF
    $t->{im_port} = port($o{port});
    return $t;
}

sub alive { Test::Nginx::alive($_[0]) }

# log in uids from @$uids until each worker of @$pids holds $min sessions
# (reuseport spreads connections by a hash); returns { pid => [uids] } or
# undef when that did not happen
sub spread {
    my ($t, $c, $w, $uids, $pids, $min) = @_;
    my %by;
    for my $u (@$uids) {
        my ($cl, $code, $pid) = login($t, $u);
        next unless defined $code && $code == 0 && $pid;
        ($c->{$u}, $w->{$u}) = ($cl, $pid);
        push @{$by{$pid}}, $u;
        return \%by unless grep { @{$by{$_} || []} < $min } @$pids;
    }
    diag('sessions per worker: ' . join ' ', map { "$_:" . @{$by{$_}} } keys %by);
    return undef;
}

# reload, and wait until every worker of before has stopped accepting
sub reload {
    my ($t) = @_;
    my @before = $t->worker_pids;
    my $mark = $t->log_mark;
    $t->reload();
    my $ok = wait_until(sub {
        my $log = $t->error_log($mark);
        return !grep { $log !~ /#$_: gracefully shutting down/ && alive($_) }
            @before;
    }, 5);
    diag('reload: old workers did not start shutting down') unless $ok;
    return $ok;
}

###############################################################################
# 1. reload; old workers keep their sessions

{
    my $t = instance(port => 9095, wst => '30s');
    $t->run();

    ok(wait_until(sub { (() = $t->worker_pids) == 2 }, 5), 'reload: two workers');
    my @old = $t->worker_pids;
    my %old = map { $_ => 1 } @old;

    # sessions on both old workers: at least 4 on each
    my (%c, %w);
    my $by = spread($t, \%c, \%w, [1001 .. 1040], \@old, 4);
    ok($by, 'reload: sessions on both old workers');
    my @A = @{$by->{$old[0]} || []};
    my @B = @{$by->{$old[1]} || []};

    my $st0 = status($t->{im_port});
    my ($inst0) = ($st0->{id} // '') =~ m{/([0-9a-f]+):};
    is($st0->{node_users}, scalar(keys %c), 'reload: the zone lists every user');

    # an offline user gets messages before and after the reload
    my @off = map { $c{$A[3]}->publish(1099, "offline $_") } 1 .. 3;
    is(scalar(grep { $c{$A[3]}->expect(cmd => PUB_ACK, msgid => $_) } @off),
        3, 'reload: messages to offline u1099 acked before the reload');

    # a burst whose acks and deliveries straddle the reload, between
    # sessions on different workers
    my ($snd, $rcv) = ($A[0], $B[0]);
    my @burst = map { $c{$snd}->publish($rcv, "burst $_") } 1 .. 20;
    reload($t);
    push @burst, map { $c{$snd}->publish($rcv, "burst $_") } 21 .. 40;

    my @new = grep { !$old{$_} } $t->worker_pids;
    ok(wait_until(sub { @new = grep { !$old{$_} } $t->worker_pids; @new == 2 }, 5),
        'reload: two new workers');
    my %new = map { $_ => 1 } @new;

    my $acked = grep { $c{$snd}->expect(cmd => PUB_ACK, msgid => $_) } @burst;
    is($acked, 40, 'reload: the burst across the reload is acked');
    my @bgot = firsts($c{$rcv}, 40);
    is_deeply([sort @bgot], [sort @burst],
        'reload: every message of the burst is delivered');
    {
        is_deeply(\@bgot, \@burst, 'reload: the burst is delivered in order')
            or diag('order of arrival: ' . join ' ', map {
                my $x = $_; (grep { $burst[$_] eq $x } 0 .. $#burst)[0] } @bgot);
    }

    ok(!grep({ !alive($_) } @old), 'reload: the old workers stay while they hold sessions');

    # the zone survived: a new worker sees the same directory (same
    # instance, the old workers' users still listed)
    my $st1 = status($t->{im_port});
    ok($new{$st1->{pid} // 0}, 'reload: /status answered by a new worker');
    my ($inst1) = ($st1->{id} // '') =~ m{/([0-9a-f]+):};
    is($inst1, $inst0, 'reload: same zone instance in the new workers');
    is($st1->{node_users}, scalar(keys %c),
        'reload: the new workers see the old workers\' users in the zone');

    # old sessions keep working, same-worker and cross-worker
    chat($c{$A[1]}, $c{$A[2]}, 'reload: old -> old, same worker');
    chat($c{$A[2]}, $c{$A[1]}, 'reload: old -> old, same worker, back');
    chat($c{$A[1]}, $c{$B[1]}, 'reload: old -> old, across old workers');
    chat($c{$B[1]}, $c{$A[1]}, 'reload: old -> old, across old workers, back');

    # new logins go to the new workers, both of them
    my $mark = $t->log_mark;
    my $nby = spread($t, \%c, \%w, [1101 .. 1140], \@new, 1);
    ok($nby, 'reload: new sessions on both new workers');
    my @after = grep { $_ > 1100 } keys %c;
    is(scalar(grep { !$new{$w{$_} // 0} } @after), 0,
        'reload: every login after the reload is on a new worker')
        or diag(join ' ', map { "u$_:$w{$_}" } @after);
    my %nw = map { $_ => $nby->{$_}[0] } grep { $nby->{$_} } @new;

    # old <-> new, every pair of workers, both ways
    for my $o ($A[1], $B[1]) {
        for my $n (sort values %nw) {
            chat($c{$o}, $c{$n}, "reload: old u$o ($w{$o}) -> new u$n ($w{$n})");
            chat($c{$n}, $c{$o}, "reload: new u$n ($w{$n}) -> old u$o ($w{$o})");
        }
    }

    # kick across generations: $B[2] (old worker) logs in again
    my $kk = $B[2];
    {
        my ($k, $code, $pid) = login($t, $kk);
        is($code, 0, "reload: u$kk logs in again");
        ok($pid && $new{$pid}, 'reload: on a new worker');
        ok($c{$kk}->expect(cmd => LOGOUT), 'reload: its old-worker session gets LOGOUT');
        chat($c{$A[3]}, $k, "reload: old -> the new session of u$kk");
        $c{$kk}->disconnect;
        ($c{$kk}, $w{$kk}) = ($k, $pid);
    }

    # the offline user logs in: before and after the reload
    push @off, map { $c{$B[3]}->publish(1099, "offline after $_") } 1 .. 2;
    is(scalar(grep { $c{$B[3]}->expect(cmd => PUB_ACK, msgid => $_) } @off[3, 4]),
        2, 'reload: messages to offline u1099 acked after the reload');
    {
        my ($c, $code, $pid) = login($t, 1099);
        is($code, 0, 'reload: u1099 logs in');
        is_deeply([firsts($c, 5)], \@off, 'reload: u1099 gets all five, in order');
        $c->disconnect;
    }

    # old sessions close: the old workers exit
    $c{$_}->disconnect for grep { $old{$w{$_} // 0} } keys %c;
    ok(wait_until(sub { !grep { alive($_) } @old }, 5),
        'reload: old workers exit once their sessions are closed');

    # the new workers still route between themselves (stale zone entries of
    # the old workers ignored)
    my ($n1, $n2) = sort values %nw;
    chat($c{$n1}, $c{$n2}, 'reload: new -> new after the old workers left');
    chat($c{$n2}, $c{$kk}, "reload: new -> u$kk after the old workers left");
    chat($c{$kk}, $c{$n1}, "reload: u$kk -> new after the old workers left");

    # a second reload with sessions everywhere
    my @gen2 = $t->worker_pids;
    reload($t);
    my ($late, $lcode, $lpid) = login($t, 1201);
    is($lcode, 0, 'reload 2: a login after the second reload');
    ok($lpid && !grep({ $_ == $lpid } @gen2), 'reload 2: on a third-generation worker');
    chat($late, $c{$n1}, 'reload 2: third generation -> second');
    chat($c{$n2}, $late, 'reload 2: second generation -> third');
    $late->disconnect;

    $_->disconnect for values %c;
    $t->stop();
}

###############################################################################
# 2. worker_shutdown_timeout runs out: DISCONNECT, close 1001

{
    my $t = instance(port => 9096, wst => '2s');
    $t->run();
    wait_until(sub { (() = $t->worker_pids) == 2 }, 5);
    my %old = map { $_ => 1 } $t->worker_pids;

    my ($a) = login($t, 1101);
    my ($b, $code) = login($t, 1102, auto_ack => 0);
    is($code, 0, 'shutdown timeout: u1102 logs in (does not acknowledge)');
    my $id1 = $a->publish(1102, 'pending before the reload');
    ok($a->expect(cmd => PUB_ACK, msgid => $id1), 'shutdown timeout: acked');
    ok($b->expect(cmd => PUBLISH, msgid => $id1), 'shutdown timeout: pushed, not acknowledged');

    my $start = time;
    reload($t);
    my $id2 = $a->publish(1102, 'pending after the reload');
    ok($a->expect(cmd => PUB_ACK, msgid => $id2), 'shutdown timeout: acked after the reload');
    ok($b->expect(cmd => PUBLISH, msgid => $id2), 'shutdown timeout: old session still served');

    # what the clients see when the 2 s run out
    for my $x (['u1101', $a], ['u1102', $b]) {
        my ($name, $c) = @$x;
        my $closed = $c->wait_closed(2 + $Test::Nginx::TIMEOUT);
        ok($closed, "shutdown timeout: the server closes ${name}'s connection");
        my @got = grep { $_->{cmd} != PUBLISH } $c->drain(0.2);
        my @cmds = map { $_->{cmd} } @got;
        ok(grep({ $_ == DISCONNECT } @cmds), "shutdown timeout: $name got DISCONNECT <<9>>")
            or diag("got commands (@cmds), close frame: "
                . ($c->ws->close_received ? 'yes' : 'none'));
        is($c->close_code, 1001, "shutdown timeout: $name got close 1001");
    }
    # not before the 2 s ($start is before the reload); how late is the
    # machine's business (the waits above are bounded)
    my $took = time - $start;
    ok($took >= 1.5, "shutdown timeout: not before worker_shutdown_timeout, 2 s (${\ sprintf '%.1f', $took} s)");
    ok(wait_until(sub { !grep { alive($_) } keys %old }, 3), 'shutdown timeout: old workers exit');

    # back in, on the new workers: the pending messages come
    my ($a2, $c1, $p1) = login($t, 1101);
    my ($b2, $c2, $p2) = login($t, 1102);
    is("$c1/$c2", '0/0', 'shutdown timeout: both log in again');
    ok($p2 && !$old{$p2}, 'shutdown timeout: on a new worker');
    is_deeply([firsts($b2, 2)], [$id1, $id2],
        'shutdown timeout: u1102 gets what was pending, in order');
    chat($b2, $a2, 'shutdown timeout: chat again');
    $_->disconnect for $a2, $b2;
    $t->stop();
}

###############################################################################
# 3. binary upgrade: USR2, then QUIT to the old master

{
    my $t = instance(port => 9097, wst => '3s');
    $t->run();
    my $d = $t->testdir;
    my $oldm = $t->master_pid;
    wait_until(sub { (() = $t->worker_pids) == 2 }, 5);
    my @oldw = $t->worker_pids;
    my %oldw = map { $_ => 1 } @oldw;

    my ($a) = login($t, 1201);
    my ($b, $code) = login($t, 1202, auto_ack => 0);
    is($code, 0, 'upgrade: u1202 logs in (does not acknowledge)');
    my @pending = ($a->publish(1202, 'pending before USR2'));
    ok($a->expect(cmd => PUB_ACK, msgid => $pending[0]), 'upgrade: acked');

    my $mark = $t->log_mark;
    kill 'USR2', $oldm;
    # the old master renames the pid file to nginx.pid.oldbin and starts the
    # new binary, which writes nginx.pid: the harness (stop()) reads the
    # master from nginx.pid, so it finds the new master by itself
    my $newm = wait_until(sub {
        return undef unless -s "$d/nginx.pid.oldbin" && -s "$d/nginx.pid";
        my ($p) = $t->read_file('nginx.pid') =~ /(\d+)/;
        return $p && $p != $oldm ? $p : undef;
    }, 5);
    ok($newm, 'upgrade: a new master');
    ok($newm && wait_until(sub { Test::Nginx::_children_of($newm) >= 2 }, 5),
        'upgrade: with its workers');
    my %neww = map { $_ => 1 } $newm ? Test::Nginx::_children_of($newm) : ();
    my ($inst_old) = (status($t->{im_port})->{id} // '') =~ m{/([0-9a-f]+):};

    # both generations accept now; the old sessions still work
    push @pending, $a->publish(1202, 'pending between USR2 and QUIT');
    ok($a->expect(cmd => PUB_ACK, msgid => $pending[1]), 'upgrade: acked between USR2 and QUIT');

    kill 'QUIT', $oldm;
    # the old workers stop accepting: new logins reach the new master. Every
    # old worker, not the first to log it: a login accepted by another one
    # would land on the old generation (and be closed 3 s later)
    ok(wait_until(sub {
        my $log = $t->error_log($mark);
        return !grep { $log !~ /#$_: gracefully shutting down/ && alive($_) } @oldw;
    }), 'upgrade: old workers shut down gracefully');
    my ($n, $ncode, $npid) = login($t, 1211);
    is($ncode, 0, 'upgrade: a login after QUIT to the old master');
    ok($npid && $neww{$npid}, 'upgrade: on a new-master worker')
        or diag('on ' . ($npid // '?') . '; old workers @oldw, new ones '
            . join(' ', sort keys %neww));
    my ($inst_new) = (status($t->{im_port})->{id} // '') =~ m{/([0-9a-f]+):};
    diag("upgrade: zone instance of the old master $inst_old, of the new one "
        . ($inst_new // '?') . ' (a fresh zone: the generations talk through Redis)')
        if $ENV{TEST_NGINX_VERBOSE};

    # old <-> new while the old workers wait for worker_shutdown_timeout
    chat($a, $n, 'upgrade: old-master session -> new-master session');
    chat($n, $a, 'upgrade: new-master session -> old-master session');
    push @pending, $n->publish(1202, 'pending, from the new master');
    ok($n->expect(cmd => PUB_ACK, msgid => $pending[2]), 'upgrade: acked by the new master');
    ok($b->expect(cmd => PUBLISH, msgid => $pending[2]),
        'upgrade: pushed to the old-master session');

    # worker_shutdown_timeout (3 s): DISCONNECT, close 1001
    ok($b->wait_closed(6), 'upgrade: the old session is closed by the server');
    {
        ok(grep({ $_->{cmd} == DISCONNECT } $b->drain(0.2)), 'upgrade: with DISCONNECT');
        is($b->close_code, 1001, 'upgrade: and close 1001');
    }
    ok(wait_until(sub { !alive($oldm) && !grep { alive($_) } @oldw }, 5),
        'upgrade: the old master and its workers exit');
    ok(!-e "$d/nginx.pid.oldbin", 'upgrade: nginx.pid.oldbin removed');

    my ($b2, $bcode, $bpid) = login($t, 1202);
    is($bcode, 0, 'upgrade: u1202 logs in again');
    ok($bpid && $neww{$bpid}, 'upgrade: on a new-master worker');
    is_deeply([firsts($b2, 3)], \@pending, 'upgrade: every pending message, in order');
    chat($b2, $n, 'upgrade: new -> new');
    chat($n, $b2, 'upgrade: new -> new, back');

    $t->{_master} = $newm;    # so that master_pid / worker_pids follow it
    $_->disconnect for $a, $n, $b2;
    $t->stop();
}

$t0->done_testing();
