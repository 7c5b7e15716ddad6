package IM::TCP;

# Client of the TCP backend API: every message is [Length:32][bytes].
#
#   my $c = IM::TCP->new(port => port(19095));
#   $c->send_msg(publish_msg(1001, msgid(), 'hi'));
#   my $m = $c->recv_decoded(3);     # { cmd => 4, msgid => ... }

use strict;
use warnings;

use IM::WS ();
use IM::Proto qw/tcp_frame tcp_unframe decode_server/;
use Time::HiRes qw/time/;

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        timeout => $o{timeout} // $IM::WS::Conn::TIMEOUT,
    }, $class;
    $self->{conn} = IM::WS::Conn->new(%o, timeout => $self->{timeout});
    return $self;
}

sub conn { $_[0]{conn} }

# one framed message; true when written
sub send_msg {
    my ($self, $bytes) = @_;
    return $self->{conn}->write_all(tcp_frame($bytes)) ? 1 : 0;
}

# bytes as they are (bad lengths, partial frames)
sub send_raw {
    my ($self, $bytes) = @_;
    return $self->{conn}->write_all($bytes) ? 1 : 0;
}

# next framed message (bytes without the length); undef on timeout/close
sub recv_msg {
    my ($self, $timeout) = @_;
    my $conn = $self->{conn};
    my $deadline = time + ($timeout // $self->{timeout});
    while (1) {
        if (my ($m, $rest) = tcp_unframe($conn->{rbuf})) {
            $conn->{rbuf} = $rest;
            return $m;
        }
        my $n = $conn->read_some($deadline);
        return undef unless $n;
    }
}

sub recv_decoded {
    my ($self, $timeout) = @_;
    my $m = $self->recv_msg($timeout);
    return defined $m ? decode_server($m) : undef;
}

# send one message and return the decoded answer (undef on timeout)
sub request {
    my ($self, $bytes, $timeout) = @_;
    $self->send_msg($bytes) or return undef;
    return $self->recv_decoded($timeout);
}

# true when the server closed the connection within the timeout
# (anything read meanwhile is discarded)
sub wait_closed {
    my ($self, $timeout) = @_;
    my $conn = $self->{conn};
    my $deadline = time + ($timeout // $self->{timeout});
    while (1) {
        return 1 if $conn->eof;
        my $n = $conn->read_some($deadline);
        return 0 unless defined $n;
        return 1 if $n == 0;
        $conn->{rbuf} = '';
    }
}

sub is_closed { $_[0]{conn}->eof }
sub close     { $_[0]{conn}->close }
sub abort     { $_[0]{conn}->abort }

1;
