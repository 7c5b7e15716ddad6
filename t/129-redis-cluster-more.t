#!/usr/bin/perl
# Redis Cluster, issue 16's loose ends
# (docs/decisions/047-cluster-loose-ends.md):
# a real cluster of three masters (IM::RedisCluster), nginx nodes on it
# with "im_redis_cluster on".  (A transaction sent again whole while slots
# move: t/127-redis-cluster.t.)
#
#   - the subscriber connections to one master killed: each worker
#     subscribes again the uids of that master's slots only
#     (im_resubscribed_total), and they get their messages again;
#   - masters that announce host names (cluster-preferred-endpoint-type
#     hostname): reached at the IP address CLUSTER SLOTS gives with them,
#     and a MOVED that names a host is followed to that node; with no
#     endpoint (unknown-endpoint) a MOVED is followed at the host that
#     answered; a node named "?" is refused, the log says what to set;
#   - a slot without a master (the cluster down): logins answered 2,
#     publishes refused, the log names the node that says CLUSTERDOWN.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::RedisCluster;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login chat/;

my %TIMERS = (
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_repush_max      => '3',
    im_close_grace     => '1s',
    im_redis_timeout   => '5s',
);

my $t0 = Test::Nginx->new()->has(qw/http redis/);
my $rc = IM::RedisCluster->new(t => $t0, masters => 3, timeout => 30);
my $uc = IM::UserCentre->new(t => $t0, users => "* * uid-from-name\n");
my $seed = $rc->node(0);

sub node {
    my (%o) = @_;
    return IM::Cluster::node(redis => $seed, uc => $uc,
        main => 'im_redis_cluster on;', timers => \%TIMERS,
        locations => 'location = /metrics { im_metrics; }', %o);
}

# a counter of /metrics (the node's sum over its workers)
sub metric {
    my ($p, $name) = @_;
    my $r = http_get('/metrics', port => port($p)) // '';
    return $r =~ /^\Q$name\E (\d+)/m ? $1 : undef;
}

# a first login once the node has read the map and reached every master
sub first_login {
    my ($t, $uid) = @_;
    my ($c, $code);
    wait_until(sub {
        ($c, $code) = login($t, $uid);
        return defined $code && $code == 0;
    }, 30);
    return ($c, $code);
}

# a's one worker holds every uid of a: all are on its subscriber
# connections
my $a = node(name => 'a', port => 9095, workers => 1);
my $b = node(name => 'b', port => 9096);
$a->run();
$b->run();

###############################################################################
# one master's subscriber connections killed: its uids only subscribed
# again

{
    # uids of a's, on the master $m and elsewhere: four of each
    my $m = $rc->owner('im:u:{12921}');
    my (@on, @off);
    for my $uid (12921 .. 13100) {
        my $list = $rc->owner("im:u:{$uid}") == $m ? \@on : \@off;
        push @$list, $uid if @$list < 4;
        last if @on == 4 && @off == 4;
    }
    is(scalar(@on) . '/' . scalar(@off), '4/4',
        'resubscribe: four uids on one master, four elsewhere');

    my %c;
    my ($first, $fc) = first_login($a, $on[0]);
    $c{$on[0]} = $first if defined $fc && $fc == 0;
    for my $uid (@on[1 .. 3], @off) {
        my ($c, $code) = login($a, $uid);
        $c{$uid} = $c if defined $code && $code == 0;
    }
    is(scalar(keys %c), 8, 'resubscribe: eight uids log in on a');
    my ($from, $cf) = first_login($b, 12999);
    is($cf, 0, 'resubscribe: a sender logs in on b');
    chat($from, $c{$_}, "resubscribe: u$_ reached before") for @on, @off;

    my $before = metric(9095, 'im_resubscribed_total') // 0;

    # every subscriber connection to $m (a's and b's): the clients with
    # shard channels
    my @ids;
    for my $line (split /\r?\n/, $m->cmd('CLIENT', 'LIST')) {
        next unless $line =~ / ssub=[1-9]/;
        push @ids, $1 if $line =~ /^id=(\d+) /;
    }
    note("subscriber clients on the master: @ids");
    ok(@ids >= 1, 'resubscribe: subscriber connections on the master: '
        . scalar(@ids));
    $m->cmd('CLIENT', 'KILL', 'ID', $_) for @ids;

    ok(wait_until(sub {
        (metric(9095, 'im_resubscribed_total') // 0) >= $before + @on
    }, 20), 'resubscribe: a subscribes again');
    sleep 1;
    is((metric(9095, 'im_resubscribed_total') // 0) - $before,
        scalar(@on), 'resubscribe: the four uids of that master only');
    chat($from, $c{$_}, "resubscribe: u$_ reached after") for @on, @off;

    $_->disconnect for values %c;
    $from->disconnect;
}

$a->stop;
$b->stop;

###############################################################################
# host names announced: the IP given with them, a MOVED by name followed

{
    my $i = 0;
    for my $n ($rc->nodes) {
        $i++;
        $n->cmd('CONFIG', 'SET', 'cluster-announce-hostname',
            "n$i.im-test.invalid");
        $n->cmd('CONFIG', 'SET', 'cluster-preferred-endpoint-type',
            'hostname');
    }
    # every node names every master by its host name
    ok(wait_until(sub {
        for my $n ($rc->nodes) {
            my $slots = eval { $n->cmd('CLUSTER', 'SLOTS') } or return 0;
            return 0 if grep { $_->[2][0] !~ /\.im-test\.invalid$/ }
                @$slots;
        }
        return 1;
    }, 20), 'hostnames: CLUSTER SLOTS names the masters by host name');

    my $c = node(name => 'c', port => 9097, workers => 1);
    $c->run();
    ok($c->wait_for_log(qr/im redis cluster: slot map read/),
        'hostnames: the map read');
    my ($x, $cx) = first_login($c, 12951);
    is($cx, 0, 'hostnames: a login');
    my ($y, $cy) = login($c, 12952);
    is($cy, 0, 'hostnames: another');
    chat($x, $y, 'hostnames: a message through the masters named by host');

    my $slot = $rc->slot('im:inbox:{12952}');
    my $owner = $rc->slot_owner($slot);
    my ($to) = grep { $_ != $owner } $rc->nodes;
    my $moved = metric(9097, 'im_redis_cluster_moved_total') // 0;
    $rc->move_slot($slot, $to);
    chat($x, $y, 'hostnames: after the slot moved');
    ok((metric(9097, 'im_redis_cluster_moved_total') // 0) > $moved,
        'hostnames: a MOVED naming a host was followed');

    my $log = $c->read_file('error.log');
    unlike($log, qr/is not an IP address/, 'hostnames: no node refused');
    like($log, qr/announced as n\d\.im-test\.invalid:\d+/,
        'hostnames: the log names the host a node announced');

    # a slot moved away from the master $owner to $to, that of an offline
    # uid (no channel of its moves, so the map is not read before the
    # MOVED); a publish to it
    my $move = sub {
        my ($uid) = @_;
        my $s = $rc->slot("im:inbox:{$uid}");
        my $o = $rc->slot_owner($s);
        my ($t) = grep { $_ != $o } $rc->nodes;
        $rc->move_slot($s, $t);
        return $t;
    };

    # no endpoint at all ("unknown-endpoint"): the map gives each master's
    # IP; a MOVED names no host, and is followed at the host of the node
    # that answered
    $_->cmd('CONFIG', 'SET', 'cluster-preferred-endpoint-type',
        'unknown-endpoint') for $rc->nodes;
    $move->(12953);
    my $id = $x->publish(12953, 'no endpoint');
    my $r = $x->expect(msgid => $id);
    is($r && $r->{cmd}, PUB_ACK, 'no endpoint: a MOVED with no host is '
        . 'followed, the message acknowledged');

    # "?": host names preferred, and the node a MOVED names has none: not
    # followed, refused; the log names the node and the setting, and the
    # map read again serves the next message
    $_->cmd('CONFIG', 'SET', 'cluster-preferred-endpoint-type', 'hostname')
        for $rc->nodes;
    my $Z = 12954;
    my $zslot = $rc->slot("im:inbox:{$Z}");
    my $zowner = $rc->slot_owner($zslot);
    my ($zto) = grep { $_ != $zowner } $rc->nodes;
    $zto->cmd('CONFIG', 'SET', 'cluster-announce-hostname', '');
    ok(wait_until(sub {
        my $slots = eval { $zowner->cmd('CLUSTER', 'SLOTS') } or return 0;
        return grep { $_->[2][1] == $zto->port && $_->[2][0] eq '?' }
            @$slots;
    }, 20), 'no host name: the old owner names the new one "?"');
    $rc->move_slot($zslot, $zto);
    my $mark = $c->log_mark;
    $id = $x->publish($Z, 'no host name');
    $r = $x->expect(msgid => $id);
    is($r && $r->{cmd}, INVALID_PACKET,
        'no host name: a MOVED to "?" is not followed: refused');
    my $why = 'node "\?:\d+" is not an IP address and port, .* host names '
        . 'are not resolved; set "cluster-preferred-endpoint-type ip" on '
        . "the cluster's nodes";
    ok($c->wait_for_log(qr/$why/, from => $mark),
        'no host name: the log names the node and the setting');
    ok(wait_until(sub {
        my $n = $x->publish($Z, 'no host name, again');
        my $a = $x->expect(msgid => $n);
        return $a && $a->{cmd} == PUB_ACK;
    }, 10), 'no host name: after the map is read again, acknowledged');
    $c->stop;
}

###############################################################################
# the cluster down: a slot without a master (CLUSTER DELSLOTS on every
# node); every master, all of them reachable, answers CLUSTERDOWN for
# every slot (cluster-require-full-coverage): a login is answered 2, a
# publish refused, and the log says which node says it; the slot given
# back, the cluster serves again

{
    my $d = node(name => 'd', port => 9098, workers => 1);
    $d->run();
    my ($x, $cx) = first_login($d, 12961);
    is($cx, 0, 'cluster down: a login before');

    my $hole = $rc->slot('im:inbox:{12969}');
    my $owner = $rc->slot_owner($hole);
    my $mark = $d->log_mark;
    # every node's view: DELSLOTS is not told to the others
    $_->cmd('CLUSTER', 'DELSLOTS', $hole) for $rc->nodes;
    ok(wait_until(sub {
        return !grep {
            (eval { $_->cmd('CLUSTER', 'INFO') } // '')
                !~ /cluster_state:fail/
        } $rc->nodes;
    }, 30), 'cluster down: every master says cluster_state:fail');

    # the first logins may still find no command refused yet: the first
    # CLUSTERDOWN answer turns them away
    my $code;
    ok(wait_until(sub {
        my $c;
        ($c, $code) = login($d, 12963);
        $c->close if $c;
        return defined $code && $code == 2;
    }, 30), 'cluster down: a login is answered 2');
    my $id = $x->publish(12962, 'while the cluster is down');
    my $r = $x->expect(msgid => $id);
    is($r && $r->{cmd}, INVALID_PACKET, 'cluster down: a publish refused');
    ok($d->wait_for_log(qr/im redis cluster: "CLUSTERDOWN [^"]*": \d+ /
        . qr/command\(s\) refused since the last such line[^\n]* redis: /
        . qr/127\.0\.0\.1:\d+ \(/, from => $mark),
        'cluster down: the log names the node and says CLUSTERDOWN')
        or diag($d->error_log);

    $owner->cmd('CLUSTER', 'ADDSLOTS', $hole);
    $rc->wait_ok;
    my ($y, $cy) = first_login($d, 12964);
    is($cy, 0, 'cluster down: the slot back, logins work again');
    my ($z, $cz) = login($d, 12963);
    is($cz, 0, 'cluster down: the uid refused meanwhile logs in');
    chat($x, $z, 'cluster down: after it, 1:1');
    $d->stop;
}

$rc->stop;

done_testing();
