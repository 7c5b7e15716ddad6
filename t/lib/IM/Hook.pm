package IM::Hook;

# A web hook receiver for one test file: an HTTP server on a free
# 127.0.0.1 port that keeps every POSTed body (one line each in hook.log in
# the test dir) and answers 200, or what fail(status, n) asked for the next
# n requests.
#
#   my $h = IM::Hook->new(t => $t);          # started
#   my @events = $h->events;                 # every JSON array, flattened
#   $h->fail(500, 2);                        # the next 2 POSTs get 500
#   $h->stop; $h->start;

use strict;
use warnings;

use IO::Socket::INET;
use JSON::PP ();
use Test::Nginx ();

my $N = 0;

sub new {
    my ($class, %o) = @_;
    my $self = bless { t => $o{t}, name => 'hook' . $N++ }, $class;
    $self->{port} = Test::Nginx::port(9200 + $N);
    $self->{log} = $o{t}->testdir . "/$self->{name}.log";
    $self->{ctl} = $o{t}->testdir . "/$self->{name}.fail";
    return $self->start;
}

sub port { $_[0]{port} }
sub addr { '127.0.0.1:' . $_[0]{port} }

sub start {
    my ($self) = @_;
    my ($port, $log, $ctl) = @$self{qw/port log ctl/};
    $self->{t}->run_daemon(sub {
        my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
            Listen => 64, ReuseAddr => 1) or die "listen $port: $!\n";
        while (my $c = $l->accept) {
            my $req = '';
            while ($req !~ /\r\n\r\n/) {
                sysread($c, $req, 65536, length $req) or last;
            }
            my ($len) = $req =~ /^Content-Length:\s*(\d+)/mi;
            my ($body) = $req =~ /\r\n\r\n(.*)\z/s;
            $body //= '';
            while (length($body) < ($len // 0)) {
                sysread($c, $body, 65536, length $body) or last;
            }
            my $status = 200;
            if (open my $f, '<', $ctl) {
                my ($st, $n) = split ' ', (<$f> // '');
                close $f;
                if ($n && $n > 0) {
                    $status = $st;
                    open my $w, '>', $ctl; print $w $st, ' ', $n - 1; close $w;
                }
            }
            if ($status == 200) {
                open my $o, '>>', $log; print $o $body, "\n"; close $o;
            }
            print $c "HTTP/1.1 $status X\r\nContent-Length: 0\r\n"
                . "Connection: close\r\n\r\n";
            close $c;
        }
    });
    $self->{pid} = $self->{t}->daemon_pid;
    Test::Nginx::wait_until(sub {
        IO::Socket::INET->new(PeerAddr => $self->addr, Timeout => 1)
    }, 10) or die "hook receiver did not start\n";
    return $self;
}

sub stop {
    my ($self) = @_;
    $self->{t}->stop_daemon(delete $self->{pid}) if $self->{pid};
    return $self;
}

# answer $status to the next $n POSTs (their bodies are not kept)
sub fail {
    my ($self, $status, $n) = @_;
    open my $w, '>', $self->{ctl} or die "$self->{ctl}: $!\n";
    print $w "$status $n";
    close $w;
    return $self;
}

# the bodies received with 200, decoded
sub batches {
    my ($self) = @_;
    open my $f, '<', $self->{log} or return ();
    my @b = map { JSON::PP::decode_json($_) } grep { /\S/ } <$f>;
    close $f;
    return @b;
}

sub events { map { @$_ } $_[0]->batches }

1;
