#!/usr/bin/perl
# Redis Cluster (issue 16 item 4; docs/decisions/043-redis-cluster.md): a
# real cluster of three masters started by the test (IM::RedisCluster), two
# nginx nodes on it with "im_redis_cluster on".
#
#   - nginx -t refuses what a cluster cannot do: im_redis_db / im_group_db
#     other than 0, im_redis_sentinel, im_redis_wait;
#   - keys and channels carry the uid as hash tag, on the slot's master;
#   - 1:1 across nodes both ways, a group message (its set read from the
#     cluster), a kick across nodes, offline delivery across nodes; the
#     admin API: presence of uids of several slots, a publish that waits
#     for the ack of a recipient on the other node, a kick;
#   - slots of the test's uids moved between masters (the cluster's own
#     migration, keys with them) while a sender keeps sending: a
#     transaction that meets a redirect is sent again whole (decision
#     047), so none is refused and none acked twice; every acknowledged
#     message reaches its recipient (a new login's inbox read included),
#     and /metrics counts the redirects followed;
#   - the same with `redis-cli --cluster reshard` itself moving the
#     recipient's master's lowest slots (its slot among them) while the
#     sender keeps sending.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until http_get http/;
use JSON::PP ();
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

###############################################################################
# nginx -t: what a cluster cannot do is refused, with the reason

{
    my $d = $t0->testdir;
    my $nginx = $Test::Nginx::NGINX;
    my %bad = (
        db    => [ 'im_redis_db 1;', '', qr/database 0 only/ ],
        group => [ 'im_group_db 2;', '', qr/database 0 only/ ],
        sentinel => [ "im_redis_sentinel 127.0.0.1:26379;\n"
                      . 'im_redis_sentinel_master mymaster;', '',
                      qr/exclude each other/ ],
        wait  => [ 'im_redis_wait 1;', '',
                   qr/"im_redis_wait" is not supported with a Redis Cluster/ ],
    );
    for my $name (sort keys %bad) {
        my ($main, $loc, $why) = @{$bad{$name}};
        $t0->write_file_expand("t-$name.conf", <<"EOF");
%%TEST_GLOBALS%%
im_redis ${\ $seed->addr};
im_redis_cluster on;
$main
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_9097%%;
        location /ws { im_websocket; im_auth /_auth; }
        $loc
        ${\ $uc->auth_location }
    }
}
EOF
        my $out = `'$nginx' -t -p '$d/' -c '$d/t-$name.conf' 2>&1`;
        my $code = $? >> 8;
        $t0->check_output($out);
        isnt($code, 0, "nginx -t: im_redis_cluster with $name refused");
        like($out, $why, "nginx -t: ... saying why ($name)");
    }
}

###############################################################################
# two nodes on the cluster

sub node {
    my (%o) = @_;
    return IM::Cluster::node(%o, redis => $seed, uc => $uc,
        main => "im_redis_cluster on;\n"
            . "im_events_stream im:events maxlen=1000;",
        timers => \%TIMERS,
        status => 1,
        locations => 'location = /metrics { im_metrics; }'
            . ' location /api/ { im_api; }');
}

my $json = JSON::PP->new->canonical;

# one admin API call: (status, decoded body)
sub api {
    my ($port, $method, $path, $body) = @_;
    my $req = "$method $path HTTP/1.0\r\nHost: localhost\r\n";
    if (defined $body) {
        $body = $json->encode($body);
        $req .= "Content-Type: application/json\r\n"
            . "Content-Length: " . length($body) . "\r\n";
    }
    my $r = http("$req\r\n", port => port($port), body => $body) // '';
    my ($status) = $r =~ m{^HTTP/1\.\d (\d+)};
    my ($text) = $r =~ /\r\n\r\n(.*)\z/s;
    return ($status // 0, eval { $json->decode($text // '') });
}

my $a = node(name => 'a', port => 9095);
my $b = node(name => 'b', port => 9096);
$a->run();
$b->run();

ok($a->wait_for_log(qr/im redis cluster: slot map read/),
    'node a: the slot map read');
ok($b->wait_for_log(qr/im redis cluster: slot map read/),
    'node b: the slot map read');

# logins on both workers of both nodes are accepted once every master's
# connections are up: a bounded wait for the first
my ($s1, $code1);
ok(wait_until(sub {
    ($s1, $code1) = login($a, 12701);
    return defined $code1 && $code1 == 0;
}, 30), 'node a: u12701 logs in');
my ($r1, $c2) = login($b, 12702);
is($c2, 0, 'node b: u12702 logs in');

ok(wait_until(sub { ($rc->cmd(XLEN => 'im:events') // 0) >= 2 }, 10),
    'events: the logins\' XADDs reach the stream on its slot\'s master');

chat($s1, $r1, 'a -> b across nodes');
chat($r1, $s1, 'b -> a across nodes');

# keys with the uid as hash tag, on the master of its slot
{
    my @ids = map { $s1->publish(12790, "offline $_") } 1 .. 3;
    is(scalar(grep { $s1->expect(cmd => PUB_ACK, msgid => $_) } @ids), 3,
        'offline: 3 messages to offline u12790 acked');
    is($rc->cmd(LLEN => 'im:inbox:{12790}'), 3,
        'the inbox is im:inbox:{12790}, on its slot\'s master');
    is($rc->slot('im:inbox:{12790}'), $rc->slot('im:u:{12790}'),
        'the uid\'s channel is in the inbox\'s slot');
    my ($c, $code) = login($b, 12790, auto_ack => 0);
    is($code, 0, 'offline: u12790 logs in on b');
    my @got;
    while (my $m = $c->expect(cmd => PUBLISH)) {
        push @got, $m->{msgid};
        $c->ack($m->{msgid});
        last if @got == 3;
    }
    is_deeply(\@got, \@ids, 'offline: all three, in order, on the other node');
    ok(wait_until(sub { !$rc->cmd(EXISTS => 'im:inbox:{12790}') }, 10),
        'offline: acked messages leave the inbox');
    $c->disconnect;
}

# a group: its set is the business's key, read from the cluster
{
    my ($m3, $code3) = login($a, 12703);
    my ($m4, $code4) = login($b, 12704);
    is("$code3/$code4", '0/0', 'group: members log in on a and b');
    $rc->cmd(SADD => 'im_group:127', 12701, 12702, 12703, 12704);
    my $id = $s1->group_publish(127, 'to the group');
    ok($s1->expect(cmd => GROUP_PUB_ACK, msgid => $id), 'group: acked');
    for my $m ([$r1, 12702], [$m3, 12703], [$m4, 12704]) {
        ok($m->[0]->expect(cmd => GROUP_PUBLISH, msgid => $id),
            "group: u$m->[1] has it");
    }
    $m3->disconnect;
    $m4->disconnect;
}

# kick across nodes: u12702 (on b) logs in on a
{
    my ($new, $code) = login($a, 12702);
    is($code, 0, 'kick: second login of u12702, on a');
    ok($r1->expect(cmd => LOGOUT), 'kick: the session on b gets LOGOUT');
    chat($s1, $new, 'kick: a message reaches the new session');
    $r1 = $new;
}

###############################################################################
# the admin API: its reads of several uids are one script per uid

{
    # u12701 on a, u12702 on a (kicked over above), u12703 offline: three
    # slots of (most likely) different masters
    my @slots = map { $rc->slot("im:s:{$_}") } 12701, 12702, 12703;
    note("presence keys' slots: @slots");
    my ($s, $p);
    ok(wait_until(sub {
        ($s, $p) = api(9096, 'GET', '/api/presence?uid=12703,12702,12701');
        my @n = map { scalar @{$_->{sessions}} } @{$p->{users} || []};
        return "@n" eq "1 1 0";
    }, 10), 'api: presence of three uids, asked on b');
    is_deeply([map { $_->{uid} } @{$p->{users} || []}],
        [12701, 12702, 12703], 'api: the uids in order');
    is($p->{users}[0]{sessions}[0]{node}, 'a', 'api: u12701 is on node a');

    # a publish on b that waits for the ack of u12701 on a: the ack comes
    # back on b's worker channel, a shard channel
    my $body = $json->encode({ to => 12701, msgid => 'c1u5' x 8,
        payload => 'from the api', wait => 20 });
    my $h = Test::Nginx::http_start("POST /api/publish HTTP/1.0\r\n"
        . "Host: localhost\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n",
        port => port(9096), body => $body);
    ok($s1->expect(cmd => PUBLISH, msgid => 'c1u5' x 8),
        'api: pushed to u12701 on a, which acks');
    my $r = $h ? Test::Nginx::http_end($h, timeout => 20) // '' : '';
    ($s) = $r =~ m{^HTTP/1\.\d (\d+)};
    ($p) = $r =~ /\r\n\r\n(.*)\z/s;
    $p = eval { $json->decode($p // '') } // {};
    is($s, 200, 'api: publish with a wait answered');
    is($p->{acked}, 1, 'api: acked by the recipient on the other node');

    # the workers' channels moved to other masters: subscribed again there
    my @w = map { @{ $_->cmd(PUBSUB => 'SHARDCHANNELS', 'im:w:*') } }
        $rc->nodes;
    ok(@w >= 4, 'api: the workers\' channels are shard channels: ' . "@w");
    for my $ch (@w) {
        my $slot = $rc->slot($ch);
        my $owner = $rc->slot_owner($slot);
        my ($to) = grep { $_ != $owner } $rc->nodes;
        $rc->move_slot($slot, $to);
    }
    ok(wait_until(sub {
        my @now = map { @{ $_->cmd(PUBSUB => 'SHARDCHANNELS', 'im:w:*') } }
            $rc->nodes;
        return @now == @w;
    }, 10), 'api: ... and subscribed again once moved');
    my $id2 = 'c1u6' x 8;
    $body = $json->encode({ to => 12701, msgid => $id2,
        payload => 'after the move', wait => 20 });
    $h = Test::Nginx::http_start("POST /api/publish HTTP/1.0\r\n"
        . "Host: localhost\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n",
        port => port(9096), body => $body);
    ok($s1->expect(cmd => PUBLISH, msgid => $id2),
        'api: after the move, pushed to u12701');
    $r = $h ? Test::Nginx::http_end($h, timeout => 20) // '' : '';
    ($p) = $r =~ /\r\n\r\n(.*)\z/s;
    $p = eval { $json->decode($p // '') } // {};
    is($p->{acked}, 1, 'api: after the move, the ack reaches b');

    # a kick asked on b of a session on a
    my ($k) = login($a, 12705);
    ok(wait_until(sub {
        my (undef, $q) = api(9096, 'GET', '/api/presence?uid=12705');
        return $q->{users}[0]{online};
    }, 10), 'api: u12705 registered');
    ($s, $p) = api(9096, 'POST', '/api/kick', { uid => 12705 });
    is($s, 200, 'api: kick answered');
    ok($k->expect(cmd => LOGOUT), 'api: the session on a gets LOGOUT');
}

# reads what came: the recipient's pushes into %$got, the sender's acks
# and refusals of what it sent into %$acked and %$refused
sub reader {
    my ($snd, $rcv, $sent, $acked, $refused, $got) = @_;
    return sub {
        my ($secs) = @_;
        for my $m ($rcv->drain($secs)) {
            $got->{$m->{msgid}}++ if $m->{cmd} == PUBLISH;
        }
        for my $m ($snd->drain(0.02)) {
            next unless defined $m->{msgid} && $sent->{$m->{msgid}};
            if ($m->{cmd} == PUB_ACK) { $acked->{$m->{msgid}}++ }
            elsif ($m->{cmd} == INVALID_PACKET) {
                $refused->{$m->{msgid}} = 1;
            }
        }
    };
}

###############################################################################
# slots moved while a sender keeps sending: nothing acked is lost

{
    my ($S, $R) = (12711, 12712);
    my ($snd, $cs) = login($a, $S);
    my ($rcv, $cr) = login($b, $R);
    is("$cs/$cr", '0/0', 'migration: sender on a, recipient on b');

    my $slot = $rc->slot("im:inbox:{$R}");
    my $sslot = $rc->slot("im:inbox:{$S}");
    my (%sent, %acked, %refused, %got);
    my $read = reader($snd, $rcv, \%sent, \%acked, \%refused, \%got);
    my $burst = sub {
        my ($tag) = @_;
        for my $k (1 .. 25) {
            $sent{ $snd->publish($R, "$tag $k") } = 1;
        }
    };

    # each move: a burst on its way while the slot moves, then more
    my @moves = (
        [ $slot, 1 ], [ $slot, 2 ], [ $sslot, 1 ], [ $slot, 0 ],
        [ $sslot, 2 ], [ $slot, 1 ],
    );
    my $i = 0;
    for my $mv (@moves) {
        my ($s, $to) = @$mv;
        $burst->("before move $i");
        $rc->move_slot($s, $rc->node($to));
        $burst->("after move $i");
        $read->(0.2);
        $i++;
    }

    # every publish answered
    ok(wait_until(sub {
        $read->(0.1);
        return keys(%acked) + keys(%refused) == keys %sent;
    }, 30), sprintf('migration: every publish answered (%d sent, %d acked, '
        . '%d refused)', scalar(keys %sent), scalar(keys %acked),
        scalar(keys %refused)));

    # what was acked reaches the recipient: live, or from the inbox
    wait_until(sub { $read->(0.2); !grep { !$got{$_} } keys %acked }, 15);
    my @missing = grep { !$got{$_} } keys %acked;
    if (@missing) {
        note(scalar(@missing)
            . ' acked but not pushed live: reading the inbox');
        $rcv->disconnect;
        my ($again, $code) = login($b, $R);
        is($code, 0, 'migration: the recipient logs in again');
        for my $m ($again->drain(3)) {
            $got{$m->{msgid}}++ if $m->{cmd} == PUBLISH;
        }
        @missing = grep { !$got{$_} } keys %acked;
    }
    is(scalar(@missing), 0, sprintf('migration: 0 of %d acknowledged messages '
        . 'lost', scalar(keys %acked)));
    # a message whose transaction (decision 037) meets a redirect is sent
    # again whole, not refused (docs/decisions/047-cluster-loose-ends.md;
    # before, 100 of 300 were refused here)
    is(scalar(keys %refused), 0, sprintf('migration: none of %d refused',
        scalar(keys %sent)));
    is(scalar(grep { $acked{$_} > 1 } keys %acked), 0,
        'migration: none acknowledged twice');

    # the moves were seen and followed
    my $metrics = '';
    for my $p (9095, 9096) {
        my $r = http_get('/metrics', port => port($p)) // '';
        $metrics .= $r;
    }
    my $moved = 0;
    $moved += $1 while $metrics =~ /^im_redis_cluster_moved_total (\d+)/mg;
    my $chan = 0;
    $chan += $1 while $metrics
        =~ /^im_redis_cluster_channels_moved_total (\d+)/mg;
    my $again = 0;
    $again += $1 while $metrics
        =~ /^im_redis_cluster_tx_again_total (\d+)/mg;
    note("MOVED followed: $moved (both nodes); channels moved: "
        . "$chan; transactions sent again: $again");
    ok($moved + $chan > 0, 'migration: /metrics counts the moves followed');
    ok($again > 0, 'migration: transactions were sent again');

    # and a message after the moves goes straight through
    my ($last) = login($b, $R);
    chat($snd, $last, 'migration: after the moves, a -> b');
}

###############################################################################
# `redis-cli --cluster reshard` itself, while a sender keeps sending: it
# moves the lowest slots of the recipient's master, as many as reach the
# recipient's slot, to another master

{
    my ($S, $R) = (12731, 12732);
    my ($snd, $cs) = login($a, $S);
    my ($rcv, $cr) = login($b, $R);
    is("$cs/$cr", '0/0', 'reshard: sender on a, recipient on b');

    my $slot = $rc->slot("im:inbox:{$R}");
    my $from = $rc->slot_owner($slot);
    my ($to) = grep { $_ != $from && $_->pid } $rc->nodes;
    my $from_id = $from->cmd('CLUSTER', 'MYID');
    my $to_id = $to->cmd('CLUSTER', 'MYID');
    my $n = 0;
    for my $r (@{ $from->cmd('CLUSTER', 'SLOTS') }) {
        next unless $r->[2][2] eq $from_id;
        for my $k ($r->[0] .. $r->[1]) { $n++ if $k <= $slot }
    }
    note("reshard: $n slots from " . $from->port . ' to ' . $to->port);

    my $out = $t0->testdir . "/reshard.out";
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        open(STDOUT, '>', $out) or die;
        open(STDERR, '>&', \*STDOUT) or die;
        exec($IM::RedisCluster::CLI, '--cluster', 'reshard', $from->addr,
            '--cluster-from', $from_id, '--cluster-to', $to_id,
            '--cluster-slots', $n, '--cluster-yes');
        die "exec: $!\n";
    }

    my (%sent, %acked, %refused, %got);
    my $read = reader($snd, $rcv, \%sent, \%acked, \%refused, \%got);

    # bursts for as long as the reshard runs (bounded)
    my ($k, $status, $deadline) = (0, undef, time + 180);
    while (time < $deadline) {
        for (1 .. 10) { $sent{ $snd->publish($R, 'reshard ' . $k++) } = 1 }
        $read->(0.1);
        if (waitpid($pid, 1) == $pid) {   # WNOHANG
            $status = $?;
            last;
        }
    }
    unless (defined $status) { kill 'KILL', $pid; waitpid($pid, 0) }
    is($status, 0, "reshard: redis-cli --cluster reshard succeeded ($k "
        . 'messages sent during it)')
        or diag(scalar `cat '$out'`);
    $rc->wait_ok;
    is($rc->slot_owner($slot), $to, 'reshard: the recipient\'s slot moved');

    ok(wait_until(sub {
        $read->(0.1);
        return keys(%acked) + keys(%refused) == keys %sent;
    }, 30), sprintf('reshard: every publish answered (%d sent, %d acked, '
        . '%d refused)', scalar(keys %sent), scalar(keys %acked),
        scalar(keys %refused)));
    wait_until(sub { $read->(0.2); !grep { !$got{$_} } keys %acked }, 15);
    my @missing = grep { !$got{$_} } keys %acked;
    if (@missing) {
        $rcv->disconnect;
        my ($again, $code) = login($b, $R);
        is($code, 0, 'reshard: the recipient logs in again');
        for my $m ($again->drain(3)) {
            $got{$m->{msgid}}++ if $m->{cmd} == PUBLISH;
        }
        @missing = grep { !$got{$_} } keys %acked;
    }
    is(scalar(@missing), 0, sprintf('reshard: 0 of %d acknowledged messages '
        . 'lost', scalar(keys %acked)));
    is(scalar(grep { $acked{$_} > 1 } keys %acked), 0,
        'reshard: none acknowledged twice');
    my ($last) = login($b, $R);
    chat($snd, $last, 'reshard: after it, a -> b');
}

$a->stop;
$b->stop;

###############################################################################
# TRYAGAIN: the strike script (three keys of one uid) while the uid's slot
# is half moved (MIGRATING, the inbox still at the old owner, the strikes
# not made yet) is answered TRYAGAIN; it is sent again until the move is
# done, then follows the MOVED: the strike is counted at the new owner

{
    my $e = IM::Cluster::node(name => 'e', port => 9092, redis => $seed,
        uc => $uc, main => 'im_redis_cluster on;', workers => 1,
        timers => { %TIMERS, im_repush_interval => '2s',
                    im_repush_max => '1', im_poison_after => '3' },
        locations => 'location = /metrics { im_metrics; }');
    $e->run();
    my $P = 12740;
    my ($snd, $cs);
    ok(wait_until(sub {
        ($snd, $cs) = login($e, 12741);
        return defined $cs && $cs == 0;
    }, 30), 'tryagain: a sender logs in');
    my ($p, $cp) = login($e, $P, auto_ack => 0);
    is($cp, 0, 'tryagain: the recipient logs in, and will not ack');
    my $id = $snd->publish($P, 'never acked');
    ok($snd->expect(cmd => PUB_ACK, msgid => $id), 'tryagain: acked');
    ok($p->expect(cmd => PUBLISH, msgid => $id), 'tryagain: pushed');

    my $slot = $rc->slot("im:inbox:{$P}");
    my $owner = $rc->slot_owner($slot);
    my ($to) = grep { $_ != $owner } $rc->nodes;
    my $m = $rc->begin_move($slot, $to);

    ok($p->wait_closed(15), 'tryagain: the server ends the session that '
        . 'does not ack (a strike)');
    my $tries = sub {
        my $r = http_get('/metrics', port => port(9092)) // '';
        return $r =~ /^im_redis_cluster_tryagain_total (\d+)/m ? $1 : 0;
    };
    ok(wait_until(sub { $tries->() > 0 }, 4),
        'tryagain: the strike was answered TRYAGAIN, and is tried again');
    $rc->end_move($m);
    ok(wait_until(sub {
        my $h = eval { $rc->cmd(HGETALL => "im:strikes:{$P}") } // [];
        return @$h == 2 && $h->[1] == 1;
    }, 10), 'tryagain: after the move the strike is counted at the new '
        . 'owner');
    is($rc->owner("im:strikes:{$P}"), $to, 'tryagain: ... which has it');
    $e->stop;
}

###############################################################################
# a seed that is not a cluster: logins answer 2, the log says why, once

{
    my $plain = IM::Redis->new(t => $t0);
    my $c = IM::Cluster::node(name => 'c', port => 9098, redis => $plain,
        uc => $uc, main => 'im_redis_cluster on;', timers => \%TIMERS,
        workers => 1);
    $c->run();
    my $why = 'ERR This instance has cluster support disabled';
    ok($c->wait_for_log(qr/im redis cluster: CLUSTER SLOTS: \Q$why\E/),
        'not a cluster: the log says so');
    my $cl = IM::Client->new(port => port(9098), auto_pong => 1);
    is($cl->login('u12720', 'pw'), 2, 'not a cluster: a login answers 2');
    sleep 2.5;
    my $n = () = $c->read_file('error.log')
        =~ /CLUSTER SLOTS: ERR This instance/g;
    is($n, 1, 'not a cluster: logged once, not every second');
    $c->stop;
    $plain->stop;
}

$rc->stop;

###############################################################################
# a master killed (kill -9) under traffic, a replica each: the cluster
# promotes the replica, the nodes read the map again and go on; every
# publish is answered, and what was acknowledged but lost (replication is
# asynchronous) is counted

{
    my $rf = IM::RedisCluster->new(t => $t0, masters => 3, replicas => 1,
        timeout => 30);
    my $c = IM::Cluster::node(name => 'c', port => 9093, redis => $rf->node(0),
        uc => $uc, main => 'im_redis_cluster on;', timers => \%TIMERS);
    my $d = IM::Cluster::node(name => 'd', port => 9094, redis => $rf->node(0),
        uc => $uc, main => 'im_redis_cluster on;', timers => \%TIMERS);
    $c->run();
    $d->run();
    my ($S, $R) = (12731, 12732);
    my ($snd, $rcv, $cs, $cr);
    ok(wait_until(sub {
        ($snd, $cs) = login($c, $S);
        return defined $cs && $cs == 0;
    }, 30), 'failover: the sender logs in on c');
    ($rcv, $cr) = login($d, $R);
    is($cr, 0, 'failover: the recipient logs in on d');
    chat($snd, $rcv, 'failover: c -> d before');

    my (%sent, %acked, %refused, %got, $killed, $resumed);
    my $read = sub {
        for my $m ($rcv->drain(0.02)) {
            $got{$m->{msgid}}++ if $m->{cmd} == PUBLISH;
        }
        for my $m ($snd->drain(0.02)) {
            next unless defined $m->{msgid} && $sent{$m->{msgid}};
            if ($m->{cmd} == PUB_ACK) {
                $acked{$m->{msgid}} = 1;
                $resumed //= time if $killed && $sent{$m->{msgid}} > $killed;
            } elsif ($m->{cmd} == INVALID_PACKET) {
                $refused{$m->{msgid}} = 1;
            }
        }
    };
    my $victim = $rf->owner("im:inbox:{$R}");
    my $start = time;
    my $k = 0;
    while (time - $start < 60) {
        $k++;
        $sent{ $snd->publish($R, "steady $k") } = time;
        $read->();
        if ($k == 50) {
            $victim->kill9;
            $killed = time;
        }
        last if $resumed && time - $resumed > 2;
    }
    ok($resumed, sprintf('failover: acks again %.1f s after the kill',
        ($resumed // time) - $killed));
    ok(wait_until(sub {
        $read->();
        return keys(%acked) + keys(%refused) == keys %sent;
    }, 30), sprintf('failover: every publish answered (%d sent, %d acked, '
        . '%d refused)', scalar(keys %sent), scalar(keys %acked),
        scalar(keys %refused)));
    wait_until(sub { $read->(); !grep { !$got{$_} } keys %acked }, 10);
    $rcv->disconnect;
    my ($again, $code) = login($d, $R);
    is($code, 0, 'failover: the recipient logs in again');
    $got{$_->{msgid}}++ for grep { $_->{cmd} == PUBLISH } $again->drain(3);
    my @lost = grep { !$got{$_} } keys %acked;
    note(sprintf('failover: %d of %d acknowledged messages lost (the '
        . 'master was killed before its replica had them)', scalar(@lost),
        scalar(keys %acked)));
    chat($snd, $again, 'failover: c -> d after');
    $c->stop;
    $d->stop;
    $rf->stop;
}

done_testing();
