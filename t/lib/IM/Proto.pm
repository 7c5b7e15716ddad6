package IM::Proto;

# Encoders and decoders of every message of docs/PROTOCOL.md, both
# directions. All integers big-endian; MsgId is 32 opaque bytes.
# t/012-vectors.t checks both against docs/vectors.json.
#
#   use IM::Proto qw/:all/;
#   my $bytes = connect_msg('test', '123456', role => 1);
#   my $m = decode_server($bytes);   # { cmd => 2, name => 'CONNECT_ACK', code => 0 }

use strict;
use warnings;

use Exporter qw/import/;
use Digest::MD5 qw/md5_hex/;
use File::Basename qw/dirname/;
use File::Spec ();
use Time::HiRes ();

use constant {
    CONNECT            => 1,
    CONNECT_ACK        => 2,
    PUBLISH            => 3,
    PUB_ACK            => 4,
    GROUP_PUBLISH      => 5,
    GROUP_PUB_ACK      => 6,
    PING               => 7,
    PING_RESP          => 8,
    DISCONNECT         => 9,
    INVALID_PACKET     => 10,
    GROUP_PART_PUBLISH => 11,
    GROUP_PART_PUB_ACK => 12,
    RECEIPT            => 13,
    LOGOUT             => 20,
};

our %NAME = (
    1 => 'CONNECT', 2 => 'CONNECT_ACK', 3 => 'PUBLISH', 4 => 'PUB_ACK',
    5 => 'GROUP_PUBLISH', 6 => 'GROUP_PUB_ACK', 7 => 'PING',
    8 => 'PING_RESP', 9 => 'DISCONNECT', 10 => 'INVALID_PACKET',
    11 => 'GROUP_PART_PUBLISH', 12 => 'GROUP_PART_PUB_ACK', 13 => 'RECEIPT',
    20 => 'LOGOUT',
);

# the ack a client sends for a push of each kind
our %ACK_FOR = (3 => 4, 5 => 6, 11 => 12);

# the commands each side sends: any other is an unknown command there
my %SENDS = (
    c => {map { $_ => 1 } 1, 3 .. 9, 11, 12},
    s => {map { $_ => 1 } 2 .. 13, 20},
);

my @CONST = qw/CONNECT CONNECT_ACK PUBLISH PUB_ACK GROUP_PUBLISH GROUP_PUB_ACK
    PING PING_RESP DISCONNECT INVALID_PACKET GROUP_PART_PUBLISH
    GROUP_PART_PUB_ACK RECEIPT LOGOUT/;
my @FUNC = qw/msgid connect_msg connect_ack publish_msg push_msg
    group_publish_msg group_push_msg part_publish_msg part_push_msg
    ack_msg pub_ack group_pub_ack part_pub_ack ping_msg ping_resp_msg
    disconnect_msg logout_msg receipt_msg invalid_packet tcp_frame tcp_unframe
    decode_server decode_client hexdump vectors vector/;
our @EXPORT_OK = (@CONST, @FUNC);
our %EXPORT_TAGS = (all => [@CONST, @FUNC], const => \@CONST, func => \@FUNC);

###############################################################################

my $seq = 0;

# 32 lowercase hex characters, unique across forked processes
sub msgid {
    return md5_hex(join ':', $$, Time::HiRes::time(), ++$seq, rand());
}

sub _id {
    my ($id) = @_;
    die "MsgId must be 32 bytes, got " . length($id) . "\n"
        unless defined $id && length $id == 32;
    return $id;
}

sub _payload {
    my ($p) = @_;
    $p //= '';
    die "payload longer than 65535 bytes\n" if length $p > 65535;
    return pack('n', length $p) . $p;
}

###############################################################################
# encoders

# CONNECT: role and client_id optional (absent = field not sent);
# client_id without role sends role 0
sub connect_msg {
    my ($user, $pass, %o) = @_;
    my $m = pack('C n/a* n/a*', CONNECT, $user // '', $pass // '');
    if (defined $o{role} || defined $o{client_id}) {
        $m .= pack('C', $o{role} // 0);
        $m .= pack('C', $o{client_id}) if defined $o{client_id};
    }
    return $m;
}

sub connect_ack { pack('CC', CONNECT_ACK, $_[0] // 0) }

# C->S 1:1 message
sub publish_msg {
    my ($to, $id, $payload) = @_;
    return pack('CN', PUBLISH, $to) . _id($id) . _payload($payload);
}

# S->C 1:1 message (no uid)
sub push_msg {
    my ($id, $payload) = @_;
    return pack('C', PUBLISH) . _id($id) . _payload($payload);
}

# group message: same layout in both directions
sub group_publish_msg {
    my ($gid, $id, $payload) = @_;
    return pack('CN', GROUP_PUBLISH, $gid) . _id($id) . _payload($payload);
}
sub group_push_msg { group_publish_msg(@_) }

# part-group message: same layout in both directions
sub part_publish_msg {
    my ($gid, $id, $uids, $payload) = @_;
    my @u = @{$uids // []};
    return pack('CN', GROUP_PART_PUBLISH, $gid) . _id($id)
        . pack('n N*', scalar @u, @u) . _payload($payload);
}
sub part_push_msg { part_publish_msg(@_) }

sub ack_msg {
    my ($cmd, $id) = @_;
    return pack('C', $cmd) . $id;    # $id not checked: long acks are legal
}
sub pub_ack       { ack_msg(PUB_ACK, $_[0]) }
sub group_pub_ack { ack_msg(GROUP_PUB_ACK, $_[0]) }
sub part_pub_ack  { ack_msg(GROUP_PART_PUB_ACK, $_[0]) }

sub ping_msg       { pack('C', PING) }
sub ping_resp_msg  { pack('C', PING_RESP) }
sub disconnect_msg { pack('C', DISCONNECT) }
sub logout_msg     { pack('C', LOGOUT) }
sub receipt_msg    { pack('Ca32N', RECEIPT, $_[0], $_[1]) }

sub invalid_packet {
    my ($cmd, $id) = @_;
    return pack('CC', INVALID_PACKET, $cmd) . (defined $id ? _id($id) : '');
}

# TCP backend framing
sub tcp_frame { pack('N/a*', $_[0]) }

# ($message, $rest) from a buffer, or () when incomplete
sub tcp_unframe {
    my ($buf) = @_;
    return () if length $buf < 4;
    my $len = unpack('N', $buf);
    return () if length $buf < 4 + $len;
    return (substr($buf, 4, $len), substr($buf, 4 + $len));
}

###############################################################################
# decoders
#
# Both return a hash: cmd, name, and per message code / msgid / payload /
# gid / uids / to / user / pass / role / client_id / bad_cmd; 'error' is set
# when the bytes don't form a valid message, 'extra' holds bytes after an
# ack's 32-byte MsgId. 'raw' is the input. With 'error' comes 'reason', the
# error in the words of docs/vectors.json: empty, unknown_cmd, truncated (a
# fixed-size field cut), length (a length field or N points past the end;
# 'error' says 'truncated' for both), trailing.

sub _reader {
    my ($bytes) = @_;
    my $pos = 0;
    # $why: the error when the bytes are not there
    my $take = sub {
        my ($n, $why) = @_;
        die(($why // 'truncated') . "\n") if $pos + $n > length $bytes;
        my $s = substr($bytes, $pos, $n);
        $pos += $n;
        return $s;
    };
    my $left = sub { length($bytes) - $pos };
    my $rest = sub { my $s = substr($bytes, $pos); $pos = length $bytes; $s };
    return ($take, $left, $rest);
}

sub _decode {
    my ($bytes, $dir) = @_;
    my %m = (raw => $bytes);
    return { %m, error => 'empty message', reason => 'empty' }
        unless length($bytes // '');

    my ($take, $left, $rest) = _reader($bytes);
    my $u8  = sub { unpack('C', $take->(1)) };
    my $u16 = sub { unpack('n', $take->(2)) };
    my $u32 = sub { unpack('N', $take->(4)) };
    my $counted = sub { $take->($_[0], 'length') };
    my $pl  = sub { $counted->($u16->()) };

    my $cmd = $u8->();
    $m{cmd} = $cmd;
    $m{name} = $NAME{$cmd} // "UNKNOWN($cmd)";

    my $ok = eval {
        die "unknown command\n" unless $SENDS{$dir}{$cmd};
        if ($cmd == CONNECT) {
            $m{user} = $counted->($u16->());
            $m{pass} = $counted->($u16->());
            $m{role} = $left->() ? $u8->() : undef;
            $m{client_id} = $left->() ? $u8->() : undef;
        } elsif ($cmd == CONNECT_ACK) {
            $m{code} = $u8->();
        } elsif ($cmd == PUBLISH) {
            $m{to} = $u32->() if $dir eq 'c';
            $m{msgid} = $take->(32);
            $m{payload} = $pl->();
        } elsif ($cmd == GROUP_PUBLISH) {
            $m{gid} = $u32->();
            $m{msgid} = $take->(32);
            $m{payload} = $pl->();
        } elsif ($cmd == GROUP_PART_PUBLISH) {
            $m{gid} = $u32->();
            $m{msgid} = $take->(32);
            my $n = $u16->();
            $m{uids} = [unpack('N*', $counted->(4 * $n))];
            $m{payload} = $pl->();
        } elsif ($cmd == PUB_ACK || $cmd == GROUP_PUB_ACK
            || $cmd == GROUP_PART_PUB_ACK)
        {
            $m{msgid} = $take->(32);
            # only a client's ack may be longer (the field client's)
            $m{extra} = $rest->() if $left->() && $dir eq 'c';
        } elsif ($cmd == RECEIPT) {
            $m{msgid} = $take->(32);
            $m{uid} = $u32->();
        } elsif ($cmd == INVALID_PACKET) {
            $m{bad_cmd} = $u8->();
            $m{msgid} = $take->(32) if $left->();
        } elsif ($cmd == PING || $cmd == PING_RESP || $cmd == DISCONNECT
            || $cmd == LOGOUT)
        {
        } else {
            die "unknown command\n";
        }
        die "trailing bytes\n" if $left->();
        1;
    };
    unless ($ok) {
        chomp(my $e = $@);
        $m{reason} = {'trailing bytes' => 'trailing',
            'unknown command' => 'unknown_cmd'}->{$e} // $e;
        $m{error} = $e eq 'length' ? 'truncated' : $e;
    }
    return \%m;
}

sub decode_server { _decode($_[0], 's') }
sub decode_client { _decode($_[0], 'c') }

sub hexdump {
    my ($b) = @_;
    return join ' ', map { sprintf '%02x', $_ } unpack('C*', $b // '');
}

###############################################################################
# docs/vectors.json, the byte-exact examples (docs/PROTOCOL.md section 9)

my $VECTORS_FILE = File::Spec->rel2abs(
    dirname(__FILE__) . '/../../../docs/vectors.json');
my $vectors;

# every vector as in the file (its text fields are character strings),
# plus 'bytes': the message its hex spells, and 'bytes_tcp' for tcp_hex
sub vectors {
    unless ($vectors) {
        require JSON::PP;
        open my $fh, '<:raw', $VECTORS_FILE
            or die "open $VECTORS_FILE: $!\n";
        my $json = do { local $/; <$fh> };
        $vectors = JSON::PP->new->utf8->decode($json)->{vectors};
        for my $v (@$vectors) {
            for my $k (qw/hex tcp_hex/) {
                next unless defined $v->{$k};
                (my $h = $v->{$k}) =~ s/\s+//g;
                $v->{$k eq 'hex' ? 'bytes' : 'bytes_tcp'} = pack('H*', $h);
            }
        }
    }
    return @$vectors;
}

# the vector of that name; dies when there is none
sub vector {
    my ($name) = @_;
    my ($v) = grep { $_->{name} eq $name } vectors();
    die "no vector \"$name\" in $VECTORS_FILE\n" unless $v;
    return $v;
}

1;
