package IM::Redis;

# A real redis-server for one test file, on a free 127.0.0.1 port, with its
# own directory in the test dir (AOF on, no RDB snapshots).
#
#   my $r = IM::Redis->new(t => $t);
#   $r->cmd(SET => 'k', 'v');  $r->select_cmd(1, SADD => 'im_group:7', 1001);
#   $r->stop; $r->start;       # same port and data (AOF)
#   $r->start(loading => 1);   # back as soon as it answers, loading or not
#   my @ids = $r->inbox_ids(1002, @msgids);  # its inbox, as MsgIds ('?')

use strict;
use warnings;

use Errno qw/EAGAIN EWOULDBLOCK EINTR/;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw/time/;
use Test::Nginx qw/free_port wait_until/;

our $REDIS = $ENV{IM_REDIS_SERVER} // '/usr/bin/redis-server';
my $seq = 0;

sub new {
    my ($class, %o) = @_;
    my $t = $o{t} or die "IM::Redis->new needs t => \$t\n";
    my $self = bless {
        t        => $t,
        port     => $o{port} // free_port(),
        password => $o{password},
        args     => $o{args} // [],
        timeout  => $o{timeout} // $Test::Nginx::TIMEOUT,
    }, $class;
    my $n = ++$seq;
    $self->{dir} = $t->testdir . "/redis$n";
    mkdir $self->{dir} or die "mkdir $self->{dir}: $!\n";
    $self->start unless $o{no_start};
    return $self;
}

sub port { $_[0]{port} }
sub addr { '127.0.0.1:' . $_[0]{port} }
sub dir  { $_[0]{dir} }
sub pid  { $_[0]{pid} }

# start(loading => 1) returns once Redis answers, LOADING too (its data
# still being read)
sub start {
    my ($self, %o) = @_;
    die "redis already running\n" if $self->{pid};
    my @args = (
        '--port', $self->{port}, '--bind', '127.0.0.1',
        '--dir', $self->{dir}, '--logfile', "$self->{dir}/redis.log",
        '--appendonly', 'yes', '--save', '', '--protected-mode', 'no',
        '--daemonize', 'no',
        (defined $self->{password}
            ? ('--requirepass', $self->{password}) : ()),
        @{$self->{args}},
    );
    $self->{t}->run_daemon($REDIS, @args);
    $self->{pid} = $self->{t}->daemon_pid;
    $self->_drop;
    # ready = answers PING (it accepts before the AOF is loaded)
    my $ok = wait_until(sub {
        my $r = eval { $self->cmd('PING') };
        return 1 if $o{loading} && !defined $r && $@ =~ /^redis: LOADING/;
        return defined $r && $r eq 'PONG';
    }, $self->{timeout});
    die "redis-server did not start on port $self->{port}:\n"
        . $self->{t}->daemon_log($self->{pid}) . $self->log unless $ok;
    return $self;
}

sub log {
    my ($self) = @_;
    my $f = "$self->{dir}/redis.log";
    return '' unless -f $f;
    open my $fh, '<', $f or return '';
    local $/;
    return <$fh> // '';
}

# SHUTDOWN NOSAVE (the AOF keeps the data), KILL if it doesn't exit
sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return $self;
    eval { $self->cmd('SHUTDOWN', 'NOSAVE') };
    $self->_drop;
    $self->{t}->wait_daemon($pid, $self->{timeout})
        or $self->{t}->stop_daemon($pid, 'KILL');
    return $self;
}

sub kill9 {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return $self;
    $self->_drop;
    $self->{t}->stop_daemon($pid, 'KILL');
    return $self;
}

sub restart { $_[0]->stop->start }

###############################################################################
# a small synchronous RESP client

sub _drop {
    my ($self) = @_;
    close delete $self->{sock} if $self->{sock};
    $self->{rbuf} = '';
    $self->{db} = 0;
}

sub _connect {
    my ($self) = @_;
    return $self->{sock} if $self->{sock};
    my $s = IO::Socket::INET->new(PeerAddr => $self->addr, Proto => 'tcp',
        Timeout => $self->{timeout})
        or die "redis connect " . $self->addr . ": $!\n";
    $s->blocking(0);
    $self->{sock} = $s;
    $self->{rbuf} = '';
    $self->{db} = 0;
    if (defined $self->{password}) {
        $self->_roundtrip('AUTH', $self->{password});
    }
    return $s;
}

sub _encode {
    my @a = @_;
    my $s = '*' . scalar(@a) . "\r\n";
    for my $x (@a) {
        $x //= '';
        utf8::encode($x) if utf8::is_utf8($x);
        $s .= '$' . length($x) . "\r\n$x\r\n";
    }
    return $s;
}

sub _fill {
    my ($self, $deadline) = @_;
    my $s = $self->{sock};
    while (1) {
        my $n = sysread($s, my $buf, 65536);
        if (defined $n) {
            die "redis closed the connection\n" unless $n;
            $self->{rbuf} .= $buf;
            return;
        }
        die "redis read: $!\n" unless $! == EAGAIN || $! == EWOULDBLOCK
            || $! == EINTR;
        my $left = $deadline - time;
        die "redis timeout\n" if $left <= 0;
        IO::Select->new($s)->can_read($left);
    }
}

sub _line {
    my ($self, $deadline) = @_;
    while ((my $i = index($self->{rbuf}, "\r\n")) < 0) {
        $self->_fill($deadline);
    }
    my $i = index($self->{rbuf}, "\r\n");
    my $l = substr($self->{rbuf}, 0, $i);
    substr($self->{rbuf}, 0, $i + 2, '');
    return $l;
}

# one reply: strings, integers, undef (nil), array refs; errors die
# with the server's message, blessed as IM::Redis::Error inside arrays
sub _reply {
    my ($self, $deadline) = @_;
    my $l = $self->_line($deadline);
    my ($type, $v) = (substr($l, 0, 1), substr($l, 1));
    return $v if $type eq '+';
    return $v + 0 if $type eq ':';
    return bless(\$v, 'IM::Redis::Error') if $type eq '-';
    if ($type eq '$') {
        return undef if $v < 0;
        $self->_fill($deadline) while length $self->{rbuf} < $v + 2;
        my $s = substr($self->{rbuf}, 0, $v);
        substr($self->{rbuf}, 0, $v + 2, '');
        return $s;
    }
    if ($type eq '*') {
        return undef if $v < 0;
        return [map { $self->_reply($deadline) } 1 .. $v];
    }
    die "redis protocol error: $l\n";
}

sub _roundtrip {
    my ($self, @args) = @_;
    my $s = $self->_connect;
    my $deadline = time + $self->{timeout};
    my $out = _encode(@args);
    while (length $out) {
        my $n = syswrite($s, $out);
        if (defined $n) {
            substr($out, 0, $n, '');
            next;
        }
        die "redis write: $!\n" unless $! == EAGAIN || $! == EWOULDBLOCK
            || $! == EINTR;
        die "redis timeout\n" if time >= $deadline;
        IO::Select->new($s)->can_write($deadline - time);
    }
    my $r = $self->_reply($deadline);
    die "redis: $$r\n" if ref $r eq 'IM::Redis::Error';
    return $r;
}

# a command on database 0; an error reply dies with its text. A broken
# connection (Redis restarted) is reopened once.
sub cmd {
    my ($self, @args) = @_;
    return $self->select_cmd(0, @args);
}

# a uid's inbox in order, each entry named by the first of @ids it holds
# ('?' for none)
sub inbox_ids {
    my ($self, $uid, @ids) = @_;
    my $l = $self->cmd(LRANGE => "im:inbox:$uid", 0, -1) // [];
    my @got;
    for my $e (@$l) {
        my ($id) = grep { index($e, $_) >= 0 } @ids;
        push @got, $id // '?';
    }
    return @got;
}

sub select_cmd {
    my ($self, $db, @args) = @_;
    my $r;
    for my $try (1, 2) {
        my $ok = eval {
            $self->_connect;
            if ($self->{db} != $db) {
                $self->_roundtrip('SELECT', $db);
                $self->{db} = $db;
            }
            $r = $self->_roundtrip(@args);
            1;
        };
        return $r if $ok;
        my $e = $@;
        # retry only when the old connection was found dead, never after
        # an error reply or a timeout (the command may have run)
        die $e if $e =~ /^redis(?:: | timeout)/ || $try == 2
            || uc($args[0] // '') eq 'SHUTDOWN';
        $self->_drop;
    }
}

sub DESTROY {
    my ($self) = @_;
    close $self->{sock} if $self->{sock};
}

1;
