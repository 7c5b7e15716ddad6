package IM::RedisCluster;

# A real Redis Cluster for one test file: n masters (and r replicas each),
# each an IM::Redis with cluster-enabled, joined by `redis-cli --cluster
# create`, ready once every node says cluster_state:ok and agrees on the
# slots.  Slots move one at a time with the cluster's own commands, so a
# test can move exactly the slot of the uids it watches, during traffic:
#
#   my $rc = IM::RedisCluster->new(t => $t, masters => 3);
#   $rc->addrs;                          # "127.0.0.1:p1 127.0.0.1:p2 ..."
#   my $n = $rc->owner('im:inbox:{42}'); # the IM::Redis that has the key
#   $rc->cmd(RPUSH => 'im:inbox:{42}', 'x');   # to the owner
#   $rc->move_slot($rc->slot('im:inbox:{42}'), $rc->node(2));
#   my $m = $rc->begin_move($slot, $rc->node(1)); ...; $rc->end_move($m);
#   $rc->stop;
#
# Slots are asked of the cluster (CLUSTER KEYSLOT), not computed here, so
# the test does not share the module's slot code.

use strict;
use warnings;

use Test::Nginx qw/wait_until/;
use IM::Redis;
use IO::Socket::INET;

our $CLI = $ENV{IM_REDIS_CLI} // '/usr/bin/redis-cli';

sub new {
    my ($class, %o) = @_;
    my $t = $o{t} or die "IM::RedisCluster->new needs t => \$t\n";
    my $self = bless {
        t        => $t,
        masters  => $o{masters} // 3,
        replicas => $o{replicas} // 0,
        timeout  => $o{timeout} // $Test::Nginx::TIMEOUT,
        # how long a node is unreachable before the others fail it over:
        # short, the test's own (the cluster's default is 15 s)
        node_timeout => $o{node_timeout} // 2000,
        nodes    => [],
    }, $class;

    my $n = $self->{masters} * (1 + $self->{replicas});
    for my $i (1 .. $n) {
        my $r = IM::Redis->new(t => $t, no_start => 1,
            port => $self->_bus_free_port, args => [
            '--cluster-enabled', 'yes',
            '--cluster-node-timeout', $self->{node_timeout},
            '--appendonly', 'no',
            # a replica fails its master over however long ago it last
            # heard from it: on a busy machine the first sync can be late
            '--cluster-replica-validity-factor', 0,
            # a replica's first sync at once (the default waits 5 s for
            # more replicas to share the transfer)
            '--repl-diskless-sync-delay', 0,
        ]);
        # its own nodes.conf, in its own directory
        push @{$r->{args}}, '--cluster-config-file', $r->dir . '/nodes.conf';
        $r->start;
        push @{$self->{nodes}}, $r;
    }

    my $create = "$CLI --cluster create " . $self->addrs
        . " --cluster-replicas $self->{replicas} --cluster-yes";
    my $out = `$create 2>&1`;
    die "redis-cli --cluster create failed:\n$out" if $?;
    $self->wait_ok or die "the cluster did not come up:\n$out";
    return $self;
}

# a free port whose cluster bus port (port + 10000) is free as well, both
# held by the harness's cross-process lock (a UDP socket on the number)
# for the life of the test: another test's server could take the bus port
# otherwise, and the node would not start
sub _bus_free_port {
    my ($self) = @_;
    my $lo = eval {
        open my $f, '<', '/proc/sys/net/ipv4/ip_local_port_range' or die;
        (split ' ', scalar <$f>)[0];
    } || 32768;
    for (1 .. 100) {
        my $p = Test::Nginx::free_port();
        next if $p + 10000 >= $lo;
        my $lock = IO::Socket::INET->new(Proto => 'udp',
            LocalAddr => '127.0.0.1:' . ($p + 10000)) or next;
        my $s = IO::Socket::INET->new(Proto => 'tcp',
            LocalAddr => '127.0.0.1:' . ($p + 10000), Listen => 1,
            ReuseAddr => 1) or next;
        close $s;
        push @{$self->{locks}}, $lock;
        return $p;
    }
    die "no port with a free cluster bus port\n";
}

sub nodes { @{ $_[0]{nodes} } }
sub node  { $_[0]{nodes}[$_[1]] }
sub addrs { join ' ', map { $_->addr } @{ $_[0]{nodes} } }

sub _up { grep { $_->pid } @{ $_[0]{nodes} } }

# every running node: cluster_state:ok, and one view of the slots; every
# running replica in sync with its master (a replica that never synced
# would fail over to an empty data set)
sub wait_ok {
    my ($self) = @_;
    return wait_until(sub {
        my %views;
        for my $r ($self->_up) {
            my $info = eval { $r->cmd('CLUSTER', 'INFO') } // return 0;
            return 0 unless $info =~ /cluster_state:ok/;
            my $repl = eval { $r->cmd('INFO', 'replication') } // return 0;
            return 0 if $repl =~ /role:slave/
                && $repl !~ /master_link_status:up/;
            my $slots = eval { $r->cmd('CLUSTER', 'SLOTS') } // return 0;
            $views{ join ';', sort map { "$_->[0]-$_->[1]:$_->[2][1]" }
                @$slots } = 1;
        }
        return keys %views == 1;
    }, $self->{timeout});
}

sub slot {
    my ($self, $key) = @_;
    return ($self->_up)[0]->cmd('CLUSTER', 'KEYSLOT', $key);
}

sub _by_port {
    my ($self, $port) = @_;
    my ($r) = grep { $_->port == $port } @{ $self->{nodes} };
    return $r;
}

# the master that owns the slot, as the first running node sees it
sub slot_owner {
    my ($self, $slot) = @_;
    my $slots = ($self->_up)[0]->cmd('CLUSTER', 'SLOTS');
    for my $range (@$slots) {
        return $self->_by_port($range->[2][1])
            if $slot >= $range->[0] && $slot <= $range->[1];
    }
    return undef;
}

sub owner { $_[0]->slot_owner($_[0]->slot($_[1])) }

# a command on the key's owner (the key is the command's second word)
sub cmd {
    my ($self, @args) = @_;
    return $self->owner($args[1])->cmd(@args);
}

# move one slot, with its keys, to the master $to: the cluster's
# migration (IMPORTING, MIGRATING, MIGRATE in batches, NODE), the way
# `redis-cli --cluster reshard` moves each of its slots
sub move_slot {
    my ($self, $slot, $to) = @_;
    my $m = $self->begin_move($slot, $to) or return;
    $self->end_move($m);
}

# the first half: the slot MIGRATING from its owner, IMPORTING at $to, no
# key moved yet (a command on several of its keys, some missing, is
# answered TRYAGAIN meanwhile); end_move() moves the keys and the slot
sub begin_move {
    my ($self, $slot, $to) = @_;
    my $from = $self->slot_owner($slot) or die "slot $slot has no owner\n";
    return undef if $from == $to;
    my $to_id = $to->cmd('CLUSTER', 'MYID');
    my $from_id = $from->cmd('CLUSTER', 'MYID');
    $to->cmd('CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $from_id);
    $from->cmd('CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $to_id);
    return { slot => $slot, from => $from, to => $to, to_id => $to_id };
}

sub end_move {
    my ($self, $m) = @_;
    my ($slot, $from, $to) = @$m{qw/slot from to/};
    while (1) {
        my $keys = $from->cmd('CLUSTER', 'GETKEYSINSLOT', $slot, 100);
        last unless @$keys;
        $from->cmd('MIGRATE', '127.0.0.1', $to->port, '', 0, 5000,
            'KEYS', @$keys);
    }
    # the new owner first, so that no node answers for nobody
    $_->cmd('CLUSTER', 'SETSLOT', $slot, 'NODE', $m->{to_id})
        for $to, $from, grep { $_ != $to && $_ != $from } $self->_up;
    $self->wait_ok or die "slot $slot: the nodes did not agree\n";
}

sub stop {
    my ($self) = @_;
    $_->stop for @{ $self->{nodes} };
    return $self;
}

1;
