#!/usr/bin/perl

# The layers of src/ (docs/ARCHITECTURE.md, "Layers"): a file includes
# only headers of its own layer or of a layer below, so includes and calls
# go one way; a lower layer reaches a higher one only through operations
# the higher one registers (ngx_im_router_ops_t, ngx_im_session_ops_t).
# The codecs include nothing of nginx (the merge only ngx_config.h and
# ngx_core.h, for ngx_queue_t), so the unit tests and fuzzers build them
# alone. Every file of src/ must have a layer here: a new file is placed
# on purpose. No nginx needed.

use strict;
use warnings;

use FindBin;
use Test::More;

my $src = "$FindBin::Bin/../src";

# lowest first
my @layers = (
    [ codecs    => qw/ngx_im_proto ngx_im_payload ngx_im_wsframe
                      ngx_im_traffic ngx_im_merge ngx_im_slot/ ],
    [ base      => qw/ngx_im ngx_im_metrics ngx_im_alloc ngx_im_timer
                      ngx_im_uids/ ],
    [ redis     => qw/ngx_im_redis_conn ngx_im_redis_sentinel ngx_im_redis
                      ngx_im_redis_int ngx_im_redis_redirect
                      ngx_im_redis_pubsub ngx_im_redis_wait
                      ngx_im_redis_worker ngx_im_redis_cluster
                      ngx_im_hook ngx_im_events/ ],
    [ store     => qw/ngx_im_msg ngx_im_store/ ],
    [ node      => qw/ngx_im_dir ngx_im_limit ngx_im_ipc/ ],
    [ table     => qw/ngx_im_table/ ],
    [ policy    => qw/ngx_im_presence ngx_im_alone ngx_im_direct/ ],
    [ router    => qw/ngx_im_router ngx_im_router_int ngx_im_router_tx
                      ngx_im_router_notice ngx_im_owe/ ],
    [ parts     => qw/ngx_im_state ngx_im_output ngx_im_delivery
                      ngx_im_publish/ ],
    [ session   => qw/ngx_im_session ngx_im_session_int ngx_im_login
                      ngx_im_dispatch/ ],
    [ transport => qw/ngx_im_module ngx_http_im ngx_http_im_module
                      ngx_http_im_log ngx_http_im_status
                      ngx_http_im_locate ngx_http_im_api ngx_http_im_api_request
                      ngx_http_im_api_presence ngx_http_im_api_module
                      ngx_http_im_api_inbox ngx_http_im_api_publish
                      ngx_stream_im_module/ ],
);

my (%layer, %name);
for my $i (0 .. $#layers) {
    my ($n, @rooms) = @{ $layers[$i] };
    $name{$i} = $n;
    $layer{$_} = $i for @rooms;
}

sub room { my $f = shift; $f =~ s{.*/}{}; $f =~ s/\.[ch]$//; $f }

opendir(my $dh, $src) or die "$src: $!";
my @files = sort grep { /\.[ch]$/ } readdir $dh;
closedir $dh;

ok(@files > 10, 'src/ has its files') or BAIL_OUT('no src/');

my %seen;
for my $f (@files) {
    my $room = room($f);
    $seen{$room} = 1;

    ok(defined $layer{$room}, "$f has a layer") or next;

    open(my $fh, '<', "$src/$f") or die "$f: $!";
    my @local = ();
    my @system = ();
    while (<$fh>) {
        push @local, $1 if /^\s*#\s*include\s+"([^"]+)"/;
        push @system, $1 if /^\s*#\s*include\s+<([^>]+)>/;
    }
    close $fh;

    my @up = grep {
        my $l = $layer{room($_)};
        !defined $l || $l > $layer{$room}
    } @local;

    is("@up", '', "$f ($name{$layer{$room}}) includes nothing above it")
        or diag(join "\n", map {
            my $l = $layer{room($_)};
            "  $_: " . (defined $l ? "layer $name{$l}" : 'not in src/')
        } @up);

    # an internal header (*_int.h) is shared by the files of one layer
    # in place of statics: nothing of another layer includes it
    my @int = grep {
        my $l = $layer{room($_)};
        /_int\.h$/ && defined $l && $l != $layer{$room}
    } @local;
    is("@int", '', "$f includes no other layer's internal header");

    next unless $layer{$room} == 0;

    my @nginx = grep { /^ngx_/ } @system;
    my $allowed = $room eq 'ngx_im_merge' || $room eq 'ngx_im_slot'
                  ? qr/^ngx_(config|core)\.h$/ : qr/^$/;

    is(join(' ', grep { !/$allowed/ } @nginx), '',
       "$f (a codec) includes nothing of nginx"
       . ($room eq 'ngx_im_merge' ? ' but ngx_queue_t' : ''));
}

# every room named above still exists (a stale table hides nothing)
for my $room (sort keys %layer) {
    ok($seen{$room}, "$room is in src/");
}

# Inside a layer split into files, calls go down too: each file below
# stands on the ones before it and names no function that a later one
# defines; a lower file calls up only through a function it was given
# (docs/decisions/055-calls-go-down.md).  Lowest first.
my @floors = (
    [ qw/ngx_im_redis ngx_im_redis_redirect ngx_im_redis_pubsub
         ngx_im_redis_wait ngx_im_redis_worker/ ],
    [ qw/ngx_im_session ngx_im_login ngx_im_dispatch/ ],
);

sub code {
    my $f = shift;
    open(my $fh, '<', "$src/$f.c") or die "$f.c: $!";
    my $text = do { local $/; <$fh> };
    close $fh;
    $text =~ s{/\*.*?\*/}{ }gs;
    $text =~ s{"(?:\\.|[^"\\])*"}{""}g;
    return $text;
}

# the functions and variables a file gives others: nginx style puts a
# function's name at the start of a line, after a line with its type, and
# a variable's definition at the start of a line
sub given {
    my $text = shift;
    my %names;
    my $prev = '';
    for my $line (split /\n/, $text) {
        if ($line =~ /^(ngx_\w+)\(/ && $prev !~ /^static\b/) {
            $names{$1} = 1;
        }
        if ($line =~ /^(?!static\b|extern\b|typedef\b)\w[\w ]*[ *]
                      (ngx_\w+)\s*(?:\[[^\]]*\])?\s*[=;]/x)
        {
            $names{$1} = 1;
        }
        $prev = $line;
    }
    return \%names;
}

for my $floors (@floors) {
    my %text = map { $_ => code($_) } @$floors;
    my %given = map { $_ => given($text{$_}) } @$floors;

    ok(keys %{ $given{$_} }, "$_.c gives functions") for @$floors;

    for my $i (0 .. $#$floors) {
        my $low = $floors->[$i];
        my @up;

        for my $high (@$floors[$i + 1 .. $#$floors]) {
            push @up, map { "$_ ($high.c)" }
                      grep { $text{$low} =~ /\b\Q$_\E\b/ }
                      sort keys %{ $given{$high} };
        }

        is("@up", '', "$low.c names nothing of the files above it");
    }
}

# the module's config lists the sources and headers in layer order
open(my $cfg, '<', "$FindBin::Bin/../config") or die "config: $!";
my $config = do { local $/; <$cfg> };
close $cfg;

for my $list (qw/IM_DEPS IM_SRCS/) {
    my ($text) = $config =~ /$list="([^"]*)"/;
    ok(defined $text, "config has $list") or next;
    my @order = map { $layer{room($_)} // 99 } $text =~ m{src/(\S+\.[ch])}g;
    my @sorted = sort { $a <=> $b } @order;
    is("@order", "@sorted", "config lists $list in layer order");
}

done_testing();
