package IM::WS::Conn;

# Non-blocking buffered TCP/TLS connection with deadlines: the transport of
# IM::WS and IM::TCP. Nothing here ever blocks past its deadline.

use strict;
use warnings;

use Errno qw/EAGAIN EWOULDBLOCK EINTR EINPROGRESS/;
use IO::Select;
use IO::Socket::INET;
use Socket qw/SOL_SOCKET SO_RCVBUF SO_SNDBUF IPPROTO_TCP TCP_NODELAY/;
use Time::HiRes qw/time/;

$SIG{PIPE} = 'IGNORE';

our $TIMEOUT = $ENV{TEST_NGINX_TIMEOUT} // 5;

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        host    => $o{host} // '127.0.0.1',
        port    => $o{port} // die("port required\n"),
        ssl     => $o{ssl} // 0,
        timeout => $o{timeout} // $TIMEOUT,
        rbuf    => '',
        eof     => 0,
    }, $class;

    my $sock = IO::Socket::INET->new(Proto => 'tcp', Blocking => 0)
        or die "socket: $!\n";
    setsockopt($sock, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf}) if $o{rcvbuf};
    setsockopt($sock, SOL_SOCKET, SO_SNDBUF, $o{sndbuf}) if $o{sndbuf};
    setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);
    my $addr = Socket::pack_sockaddr_in($self->{port},
        Socket::inet_aton($self->{host}) // die "bad host $self->{host}\n");
    unless (connect($sock, $addr)) {
        die "connect $self->{host}:$self->{port}: $!\n"
            unless $! == EINPROGRESS || $! == EAGAIN;
        my $sel = IO::Select->new($sock);
        die "connect $self->{host}:$self->{port}: timeout\n"
            unless $sel->can_write($self->{timeout});
        my $err = getsockopt($sock, SOL_SOCKET, Socket::SO_ERROR);
        $err = unpack('i', $err // pack('i', 0));
        if ($err) {
            $! = $err;
            die "connect $self->{host}:$self->{port}: $!\n";
        }
    }

    if ($self->{ssl}) {
        require IO::Socket::SSL;
        $sock->blocking(1);
        IO::Socket::SSL->start_SSL($sock,
            SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_NONE(),
            SSL_hostname    => $o{sni} // '',
            Timeout         => $self->{timeout},
            %{$o{ssl_opts} // {}},
        ) or die "TLS handshake with $self->{host}:$self->{port}: "
            . IO::Socket::SSL::errstr() . "\n";
        $sock->blocking(0);
    }
    $self->{sock} = $sock;
    return $self;
}

sub sock { $_[0]{sock} }
sub eof  { $_[0]{eof} }

sub _wait_io {
    my ($self, $want_write, $deadline) = @_;
    my $left = $deadline - time;
    return 0 if $left <= 0;
    my $sel = IO::Select->new($self->{sock});
    my @r = $want_write ? $sel->can_write($left) : $sel->can_read($left);
    return scalar @r;
}

sub _ssl_wants_write {
    my ($self) = @_;
    return 0 unless $self->{ssl};
    return ($IO::Socket::SSL::SSL_ERROR // 0)
        == IO::Socket::SSL::SSL_WANT_WRITE() ? 1 : 0;
}

# read what is available into rbuf: >0 bytes read, 0 on EOF/error,
# undef on timeout
sub read_some {
    my ($self, $deadline) = @_;
    return 0 if $self->{eof} || !$self->{sock};
    while (1) {
        my $n = $self->{sock}->sysread(my $buf, 65536);
        if (defined $n) {
            if ($n == 0) {
                $self->{eof} = 1;
                return 0;
            }
            $self->{rbuf} .= $buf;
            return $n;
        }
        if ($! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR) {
            $self->_wait_io($self->_ssl_wants_write, $deadline)
                or return undef;
            next;
        }
        $self->{error} = "$!";
        $self->{eof} = 1;
        return 0;
    }
}

# write without waiting: bytes written (maybe 0), undef on error
sub write_nb {
    my ($self, $bytes) = @_;
    return undef if !$self->{sock} || $self->{write_error};
    return 0 unless length $bytes;
    my $n = $self->{sock}->syswrite($bytes);
    return $n if defined $n;
    return 0 if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
    $self->{write_error} = "$!";
    return undef;
}

# write everything before the deadline: 1 done, 0 error, undef timeout
sub write_all {
    my ($self, $bytes, $deadline) = @_;
    $deadline //= time + $self->{timeout};
    my $off = 0;
    while ($off < length $bytes) {
        my $n = $self->write_nb(substr($bytes, $off));
        return 0 unless defined $n;
        if ($n) {
            $off += $n;
            next;
        }
        my $want_read = $self->{ssl}
            && ($IO::Socket::SSL::SSL_ERROR // 0)
            == IO::Socket::SSL::SSL_WANT_READ();
        $self->_wait_io(!$want_read, $deadline) or return undef;
    }
    return 1;
}

sub close {
    my ($self) = @_;
    if (my $s = delete $self->{sock}) {
        CORE::close($s);
    }
    $self->{eof} = 1;
}

# reset the connection (RST instead of FIN)
sub abort {
    my ($self) = @_;
    if (my $s = $self->{sock}) {
        setsockopt($s, SOL_SOCKET, Socket::SO_LINGER, pack('ii', 1, 0));
    }
    $self->close;
}

sub DESTROY { $_[0]->close }

###############################################################################

package IM::WS;

# Blocking-with-timeouts WebSocket client for tests (RFC 6455, own framing).
#
#   my $ws = IM::WS->new(port => port(9095), path => '/ws');
#   $ws->status == 101 or ...;
#   $ws->send_binary($bytes);
#   my $msg = $ws->recv_message(3);

use strict;
use warnings;

use Digest::SHA qw/sha1_base64/;
use MIME::Base64 qw/encode_base64/;
use Time::HiRes qw/time sleep/;

use constant {
    OP_CONT => 0, OP_TEXT => 1, OP_BINARY => 2,
    OP_CLOSE => 8, OP_PING => 9, OP_PONG => 10,
};

our $TIMEOUT = $ENV{TEST_NGINX_TIMEOUT} // 5;
my $GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

sub _rand_bytes {
    my ($n) = @_;
    return join '', map { chr int rand 256 } 1 .. $n;
}

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        host    => $o{host} // '127.0.0.1',
        port    => $o{port},
        path    => $o{path} // '/ws',
        ssl     => $o{ssl} // 0,
        timeout => $o{timeout} // $TIMEOUT,
        queue   => [],
        frag    => undef,
        pings   => [],
        pongs   => [],
        errors  => [],
    }, $class;

    $self->{conn} = IM::WS::Conn->new(%o, host => $self->{host},
        timeout => $self->{timeout});
    $self->handshake(%o) unless $o{connect_only};
    return $self;
}

sub conn { $_[0]{conn} }

###############################################################################
# handshake

sub handshake {
    my ($self, %o) = @_;
    my $conn = $self->{conn};

    my $key = encode_base64(_rand_bytes(16), '');
    $self->{key} = $key;

    my $req = $o{request};
    unless (defined $req) {
        my $hostport = $self->{host} . ':' . $self->{port};
        my @h = (
            [Host => $hostport],
            [Upgrade => 'websocket'],
            [Connection => 'Upgrade'],
            ['Sec-WebSocket-Key' => $key],
            ['Sec-WebSocket-Version' => 13],
        );
        my $extra = $o{headers} // {};
        my @extra = ref $extra eq 'ARRAY'
            ? map { [$extra->[2 * $_], $extra->[2 * $_ + 1]] }
                0 .. $#$extra / 2
            : map { [$_, $extra->{$_}] } sort keys %$extra;
        for my $e (@extra) {
            my ($n, $v) = @$e;
            my ($have) = grep { lc $_->[0] eq lc $n } @h;
            if ($have) {
                $have->[1] = $v;    # undef removes the default header
            } else {
                push @h, [$n, $v];
            }
        }
        $req = "GET $self->{path} HTTP/1.1\r\n"
            . join('', map { "$_->[0]: $_->[1]\r\n" } grep { defined $_->[1] } @h)
            . "\r\n";
    }

    my $deadline = time + $self->{timeout};
    unless ($conn->write_all($req, $deadline)) {
        $self->{error} = 'cannot send the handshake';
        return $self;
    }

    # response head
    while ($conn->{rbuf} !~ /\r\n\r\n/) {
        if (length $conn->{rbuf} > 65536) {
            $self->{error} = 'response head too long';
            return $self;
        }
        my $n = $conn->read_some($deadline);
        unless ($n) {
            $self->{error} = defined $n
                ? 'connection closed during the handshake'
                : 'handshake timeout';
            $self->{head} = $conn->{rbuf};
            return $self;
        }
    }
    $conn->{rbuf} =~ s/\A(.*?)\r\n\r\n//s;
    my $head = $1;
    $self->{head} = $head;
    my ($status_line, @lines) = split /\r\n/, $head;
    $self->{status_line} = $status_line;
    ($self->{status}) = $status_line =~ m{^HTTP/\d\.\d\s+(\d{3})};
    my %h;
    for (@lines) {
        my ($n, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
        $n = lc $n;
        $h{$n} = exists $h{$n} ? "$h{$n}, $v" : $v;
    }
    $self->{headers} = \%h;

    if (($self->{status} // 0) == 101) {
        my $want = sha1_base64($key . $GUID) . '=';
        $self->{accept_ok} = ($h{'sec-websocket-accept'} // '') eq $want;
        $self->{error} = 'bad Sec-WebSocket-Accept' unless $self->{accept_ok};
    } else {
        # keep the body (Content-Length bounded); the connection stays usable
        my $len = $h{'content-length'};
        if (defined $len && $len =~ /^\d+$/) {
            while (length $conn->{rbuf} < $len) {
                last unless $conn->read_some($deadline);
            }
            $self->{body} = substr($conn->{rbuf}, 0, $len, '');
        } else {
            $self->{body} = $conn->{rbuf};
            $conn->{rbuf} = '';
        }
        $self->{error} //= "HTTP status " . ($self->{status} // '?');
    }
    return $self;
}

sub status      { $_[0]{status} }
sub status_line { $_[0]{status_line} }
sub headers     { $_[0]{headers} // {} }
sub header      { ($_[0]{headers} // {})->{lc $_[1]} }
sub body        { $_[0]{body} }
sub head        { $_[0]{head} }
sub error       { $_[0]{error} }
sub upgraded    { ($_[0]{status} // 0) == 101 && $_[0]{accept_ok} }

###############################################################################
# frames

sub build_frame {
    my (%o) = @_;
    my $p = $o{payload} // '';
    utf8::encode($p) if utf8::is_utf8($p);
    my $fin = $o{fin} // 1;
    my $mask = $o{mask} // 1;
    my $rsv = $o{rsv} // 0;
    my $op = $o{opcode} // OP_BINARY;
    my $len = length $p;

    my $f = pack('C', ($fin ? 0x80 : 0) | (($rsv & 7) << 4) | ($op & 0x0f));
    my $mbit = $mask ? 0x80 : 0;
    my $lb = $o{length_bytes} // ($len < 126 ? 0 : $len < 65536 ? 2 : 8);
    if ($lb == 0) {
        $f .= pack('C', $mbit | $len);
    } elsif ($lb == 2) {
        $f .= pack('Cn', $mbit | 126, $len);
    } else {
        $f .= pack('CQ>', $mbit | 127, $len);
    }
    if ($mask) {
        my $key = $o{mask_key} // _rand_bytes(4);
        $f .= $key;
        $p ^= substr($key x (int($len / 4) + 1), 0, $len) if $len;
    }
    return $f . $p;
}

# (frame, bytes used) from the front of a buffer, or () when incomplete
sub parse_frame {
    my ($buf) = @_;
    my $have = length $buf;
    return () if $have < 2;
    my ($b0, $b1) = unpack('CC', $buf);
    my $len = $b1 & 0x7f;
    my $off = 2;
    if ($len == 126) {
        return () if $have < 4;
        $len = unpack('n', substr($buf, 2, 2));
        $off = 4;
    } elsif ($len == 127) {
        return () if $have < 10;
        $len = unpack('Q>', substr($buf, 2, 8));
        $off = 10;
    }
    my $masked = $b1 & 0x80 ? 1 : 0;
    my $key;
    if ($masked) {
        return () if $have < $off + 4;
        $key = substr($buf, $off, 4);
        $off += 4;
    }
    return () if $have < $off + $len;
    my $p = substr($buf, $off, $len);
    $p ^= substr($key x (int($len / 4) + 1), 0, $len) if $masked && $len;
    return ({
        fin => $b0 >> 7, rsv => ($b0 >> 4) & 7, opcode => $b0 & 0x0f,
        masked => $masked, payload => $p, length => $len,
    }, $off + $len);
}

sub send_raw {
    my ($self, $bytes) = @_;
    return $self->{conn}->write_all($bytes) ? 1 : 0;
}

sub send_frame {
    my ($self, %o) = @_;
    $self->{close_sent} = 1 if ($o{opcode} // -1) == OP_CLOSE;
    return $self->send_raw(build_frame(%o));
}

sub send_binary {
    my ($self, $bytes) = @_;
    return $self->send_frame(opcode => OP_BINARY, payload => $bytes);
}

sub send_text {
    my ($self, $s) = @_;
    return $self->send_frame(opcode => OP_TEXT, payload => $s);
}

sub send_ping {
    my ($self, $p) = @_;
    return $self->send_frame(opcode => OP_PING, payload => $p // '');
}

# one data message in several frames: send_fragmented(OP_BINARY, @chunks)
sub send_fragmented {
    my ($self, $opcode, @chunks) = @_;
    my $ok = 1;
    for my $i (0 .. $#chunks) {
        $ok &&= $self->send_frame(opcode => $i ? OP_CONT : $opcode,
            payload => $chunks[$i], fin => $i == $#chunks ? 1 : 0);
    }
    return $ok;
}

# next frame as it came (control frames included); undef on timeout/close
sub recv_frame {
    my ($self, $timeout) = @_;
    my $conn = $self->{conn};
    my $deadline = time + ($timeout // $self->{timeout});
    while (1) {
        if (my ($f, $used) = parse_frame($conn->{rbuf})) {
            substr($conn->{rbuf}, 0, $used, '');
            $self->_note_close($f) if $f->{opcode} == OP_CLOSE;
            return $f;
        }
        my $n = $conn->read_some($deadline);
        return undef unless $n;
    }
}

sub _note_close {
    my ($self, $f) = @_;
    $self->{close_received} = 1;
    my $p = $f->{payload};
    if (length $p >= 2) {
        $self->{close_code} = unpack('n', $p);
        $self->{close_reason} = substr($p, 2);
    }
}

sub _error {
    my ($self, $e) = @_;
    push @{$self->{errors}}, $e;
}

# handles one frame; returns a complete data message or undef
sub _handle_frame {
    my ($self, $f) = @_;
    my $op = $f->{opcode};
    $self->_error('masked frame from server') if $f->{masked};
    $self->_error("RSV bits $f->{rsv} set") if $f->{rsv};

    if ($op == OP_PING) {
        push @{$self->{pings}}, $f->{payload};
        $self->send_frame(opcode => OP_PONG, payload => $f->{payload})
            unless $self->{close_sent} || $self->{no_auto_pong};
        return undef;
    }
    if ($op == OP_PONG) {
        push @{$self->{pongs}}, $f->{payload};
        return undef;
    }
    if ($op == OP_CLOSE) {
        # echo the close (RFC 6455 5.5.1)
        unless ($self->{close_sent} || $self->{no_close_reply}) {
            $self->send_frame(opcode => OP_CLOSE, payload =>
                defined $self->{close_code} ? pack('n', $self->{close_code}) : '');
        }
        return undef;
    }
    if ($op == OP_TEXT || $op == OP_BINARY) {
        $self->_error('new data frame inside a fragmented message')
            if $self->{frag};
        if ($f->{fin}) {
            $self->{frag} = undef;
            return { opcode => $op, data => $f->{payload} };
        }
        $self->{frag} = { opcode => $op, data => $f->{payload} };
        return undef;
    }
    if ($op == OP_CONT) {
        unless ($self->{frag}) {
            $self->_error('continuation without a message');
            return undef;
        }
        $self->{frag}{data} .= $f->{payload};
        return delete $self->{frag} if $f->{fin};
        return undef;
    }
    $self->_error("unknown opcode $op");
    return undef;
}

# next complete data message (bytes); undef on timeout or close.
# ->last_opcode tells whether it was binary (2) or text (1).
sub recv_message {
    my ($self, $timeout) = @_;
    return undef if $self->{no_read};
    my $deadline = time + ($timeout // $self->{timeout});
    while (1) {
        if (my $m = shift @{$self->{queue}}) {
            $self->{last_opcode} = $m->{opcode};
            return $m->{data};
        }
        return undef if $self->{close_received};
        my $left = $deadline - time;
        return undef if $left <= 0;
        my $f = $self->recv_frame($left) or return undef;
        my $m = $self->_handle_frame($f) or next;
        push @{$self->{queue}}, $m;
    }
}

sub last_opcode    { $_[0]{last_opcode} }
sub close_code     { $_[0]{close_code} }
sub close_reason   { $_[0]{close_reason} }
sub close_received { $_[0]{close_received} }
sub pings          { @{$_[0]{pings}} }
sub pongs          { @{$_[0]{pongs}} }
sub frame_errors   { @{$_[0]{errors}} }

# send a close frame (code optional); does not wait
sub close {
    my ($self, $code, $reason) = @_;
    my $p = defined $code ? pack('n', $code) . ($reason // '') : '';
    return $self->send_frame(opcode => OP_CLOSE, payload => $p);
}

# true when the server closed the TCP connection within the timeout;
# frames read meanwhile are handled (data messages stay queued)
sub wait_closed {
    my ($self, $timeout) = @_;
    my $conn = $self->{conn};
    my $deadline = time + ($timeout // $self->{timeout});
    while (1) {
        while (my ($f, $used) = parse_frame($conn->{rbuf})) {
            substr($conn->{rbuf}, 0, $used, '');
            $self->_note_close($f) if $f->{opcode} == OP_CLOSE;
            my $m = $self->_handle_frame($f);
            push @{$self->{queue}}, $m if $m;
        }
        return 1 if $conn->eof;
        my $n = $conn->read_some($deadline);
        return 1 if defined $n && $n == 0;
        return 0 unless defined $n;
    }
}

sub is_closed { $_[0]{conn}->eof }

# close the TCP connection without a close frame
sub disconnect { $_[0]{conn}->close }
sub abort      { $_[0]{conn}->abort }

# never-reading client: recv_* return undef without reading from now on;
# optionally shrink the receive buffer so the server's output backs up
sub stop_reading {
    my ($self, $rcvbuf) = @_;
    $self->{no_read} = 1;
    setsockopt($self->{conn}->sock, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(),
        $rcvbuf) if $rcvbuf && $self->{conn}->sock;
    return $self;
}

sub resume_reading { delete $_[0]{no_read}; $_[0] }

# send one binary message over and over until the socket stops taking
# bytes for 'stall' seconds (default 1), 'max' messages were sent, the
# overall 'timeout' passed, or the connection failed. Returns the number
# of complete messages sent.
sub flood {
    my ($self, $msg, %o) = @_;
    my $conn = $self->{conn};
    my $stall = $o{stall} // 1;
    my $deadline = time + ($o{timeout} // $self->{timeout});
    my $max = $o{max} // 1e9;
    my ($sent, $pending, $last_progress) = (0, '', time);
    while ($sent < $max && time < $deadline) {
        $pending = build_frame(opcode => OP_BINARY, payload => $msg)
            unless length $pending;
        my $n = $conn->write_nb($pending);
        last unless defined $n;
        if ($n) {
            substr($pending, 0, $n, '');
            $sent++ unless length $pending;
            $last_progress = time;
            next;
        }
        last if time - $last_progress >= $stall;
        $conn->_wait_io(1, time + 0.05);
    }
    # finish a half-written frame so the stream stays well formed
    $conn->write_all($pending, time + 0.5) if length $pending;
    return $sent;
}

1;
