#!/usr/bin/perl

# The byte-exact examples of docs/vectors.json (schema: docs/PROTOCOL.md
# section 9) against the harness's codec (t/lib/IM/Proto.pm), without
# nginx: every vector is decoded in each direction it names and compared
# field by field, or must fail with its error (the MsgId still reported
# when the vector says it was read); every valid one is built again from
# its fields and must give the same bytes; TCP framings are checked with
# tcp_frame / tcp_unframe. The worked examples of docs/PROTOCOL.md are
# checked against the vectors they name. The C unit tests and the JS
# tests load the same file.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Encode qw/encode_utf8/;
use IM::Proto qw/:all/;

my @vectors = vectors();

# a byte field of a vector: the UTF-8 bytes of its text (undef stays)
sub b { defined $_[0] ? encode_utf8($_[0]) : undef }

sub dirs { $_[0]{direction} eq 'both' ? ('c2s', 's2c') : ($_[0]{direction}) }

sub decode {
    my ($dir, $bytes) = @_;
    return $dir eq 'c2s' ? decode_client($bytes) : decode_server($bytes);
}

sub encode {
    my ($dir, $f) = @_;
    my $c = $f->{cmd};
    return connect_msg(b($f->{user}), b($f->{pass}), role => $f->{role},
        client_id => $f->{client_id}) if $c == CONNECT;
    return connect_ack($f->{code}) if $c == CONNECT_ACK;
    if ($c == PUBLISH) {
        return $dir eq 'c2s'
            ? publish_msg($f->{to}, b($f->{msgid}), b($f->{payload}))
            : push_msg(b($f->{msgid}), b($f->{payload}));
    }
    return group_publish_msg($f->{gid}, b($f->{msgid}), b($f->{payload}))
        if $c == GROUP_PUBLISH;
    return part_publish_msg($f->{gid}, b($f->{msgid}), $f->{uids},
        b($f->{payload})) if $c == GROUP_PART_PUBLISH;
    return ack_msg($c, b($f->{msgid} . $f->{extra}))
        if $c == PUB_ACK || $c == GROUP_PUB_ACK || $c == GROUP_PART_PUB_ACK;
    return invalid_packet($f->{bad_cmd}, b($f->{msgid}))
        if $c == INVALID_PACKET;
    return receipt_msg(b($f->{msgid}), $f->{uid}) if $c == RECEIPT;
    return pack('C', $c)
        if $c == PING || $c == PING_RESP || $c == DISCONNECT || $c == LOGOUT;
    die "no encoder for cmd $c\n";
}

# the vector's fields as IM::Proto decodes them
sub expected {
    my ($f) = @_;
    my %m;
    for my $k (keys %$f) {
        my $v = $f->{$k};
        $m{$k} = ($k =~ /^(?:user|pass|msgid|payload|extra)\z/) ? b($v) : $v;
    }
    # IM::Proto leaves 'extra' out when an ack has nothing after its MsgId
    delete $m{extra} if defined $m{extra} && $m{extra} eq '';
    return \%m;
}

###############################################################################
# the file itself

my %seen_name;
my @dup = grep { $seen_name{$_->{name}}++ } @vectors;
ok(@vectors >= 80 && !@dup, scalar(@vectors) . ' vectors, names unique')
    or diag(join ', ', map { $_->{name} } @dup);

my %field = map { $_ => 1 }
    qw/cmd user pass role client_id code to gid msgid uids payload extra
    bad_cmd uid/;
my @unknown = map { my $v = $_; map { "$v->{name}: $_" }
    grep { !$field{$_} } keys %{$v->{fields}} } @vectors;
ok(!@unknown, 'fields of known names only') or diag(join "\n", @unknown);

my %seen;
for my $v (grep { $_->{valid} } @vectors) {
    $seen{"$_ $v->{fields}{cmd}"} = 1 for dirs($v);
}
my @missing = grep { !$seen{$_} }
    (map({ "c2s $_" } 1, 3 .. 9, 11, 12), map({ "s2c $_" } 2 .. 12, 20));
ok(!@missing, 'a valid vector for every command in each of its directions')
    or diag("missing: @missing");

###############################################################################
# each vector, each direction

for my $v (@vectors) {
    my $bytes = $v->{bytes};
    my $f = $v->{fields};

    for my $dir (dirs($v)) {
        my $name = "$dir $v->{name}";
        my $m = decode($dir, $bytes);

        if ($v->{valid}) {
            is($m->{error}, undef, "$name: decodes");
            my $want = expected($f);
            my %got = map { $_ => $m->{$_} } keys %$want;
            is_deeply(\%got, $want, "$name: fields");
            ok(!defined $m->{extra}, "$name: nothing after the MsgId")
                if exists $f->{extra} && $f->{extra} eq '';
            is(hexdump(encode($dir, $f)), hexdump($bytes), "$name: built");
        } else {
            is($m->{reason}, $v->{error}, "$name: $v->{error}");
            is($m->{cmd}, $f->{cmd}, "$name: cmd") if exists $f->{cmd};
            is($m->{msgid}, b($f->{msgid}),
                "$name: MsgId " . (defined $f->{msgid} ? 'read' : 'not read'))
                if exists $f->{msgid};
        }
    }

    if (defined $v->{tcp_hex}) {
        my $framed = $v->{bytes_tcp};
        is(hexdump(tcp_frame($bytes)), hexdump($framed),
            "$v->{name}: TCP framing");
        my ($msg, $rest) = tcp_unframe($framed . 'x');
        ok(defined $msg && $msg eq $bytes && $rest eq 'x',
            "$v->{name}: TCP unframing");
    }
}

###############################################################################
# the worked examples of docs/PROTOCOL.md: in a code block, a line
# "vector: NAME" (or "tcp vector: NAME" for its tcp_hex) and then one line
# per field, its bytes in hex and, after two spaces or more, what they mean

my %by_name = map { $_->{name} => $_ } @vectors;
my $md_file = "$FindBin::Bin/../docs/PROTOCOL.md";
open my $md, '<:encoding(UTF-8)', $md_file or die "open $md_file: $!\n";
my (@examples, $ex, $in_code);
while (my $line = <$md>) {
    chomp $line;
    $line =~ s/^\s+//;    # code blocks inside list items are indented
    if ($line =~ /^```/) {
        $in_code = !$in_code;
        undef $ex;
        next;
    }
    next unless $in_code;
    if ($line =~ /^(tcp )?vector: (.+?)(?:\s{2,}.*)?$/) {
        push @examples, $ex = {tcp => !!$1, name => $2, bytes => '',
            line => $.};
    } elsif ($line eq '') {
        undef $ex;
    } elsif ($ex) {
        if ($line =~ /^((?:[0-9a-f]{2} )*[0-9a-f]{2})(?:\s{2,}.*)?$/) {
            (my $h = $1) =~ s/ //g;
            $ex->{bytes} .= pack('H*', $h);
        } else {
            $ex->{bad} //= $line;
        }
    }
}
close $md;

ok(@examples >= 30, scalar(@examples) . ' worked examples in docs/PROTOCOL.md');
for my $e (@examples) {
    my $v = $by_name{$e->{name}};
    my $what = "docs/PROTOCOL.md line $e->{line}: "
        . ($e->{tcp} ? 'tcp ' : '') . "vector \"$e->{name}\"";
    ok(!defined $e->{bad}, "$what: bytes only") or diag("line: $e->{bad}");
    ok($v, "$what: in docs/vectors.json") or next;
    is(hexdump($e->{bytes}), hexdump($e->{tcp} ? $v->{bytes_tcp} : $v->{bytes}),
        "$what: the vector's bytes");
}
my %shown = map { $_->{name} => 1 } @examples;
my @hidden = map { $_->{name} } grep { $_->{seed} && !$shown{$_->{name}} }
    @vectors;
ok(!@hidden, "every seed vector is a worked example of docs/PROTOCOL.md")
    or diag("not shown: @hidden");

done_testing();
