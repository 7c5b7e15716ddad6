#!/usr/bin/perl

# Every nginx configuration example in the documentation passes `nginx -t`
# with the built module: each ```nginx block of README.md and docs/*.md.
#
# A block is a fragment; it is tried in the contexts where a fragment can
# go (main, http, server, location, stream server) and must pass in one of
# them.  A block that lists alternatives ("# or ...") is split there: each
# alternative is checked alone.  What only the operator's machine has is
# moved into the test directory, the same way for every block:
#   - files under /etc/nginx/ ending in .crt/.pem (a test certificate) or
#     .key (its key); /var/log/nginx/, /var/lib/nginx/, /run/nginx.pid;
#   - the module paths and Debian's modules-enabled include (both modules);
#   - placeholder host names (*.internal, *.example.com, the upstream
#     "backend") become 127.0.0.1, since nginx resolves names when it reads
#     its configuration.
# A path left outside the test directory fails the block's check, so a new
# example with a new kind of path is noticed here rather than skipped.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;    # skips everything when the module is not built

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl/);

my $d = $t->testdir;
my $repo = $t->repo;
my $nginx = $Test::Nginx::NGINX;
my $module = $t->im_module;
my $stream_module = $Test::Nginx::STREAM_MODULE;

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or die "open $f: $!\n";
    local $/;
    return scalar <$fh>;
}

# the blocks: [ "file:line", text ]
my @blocks;
for my $f ('README.md', map { s{^\Q$repo\E/}{}r } glob "$repo/docs/*.md") {
    my @lines = split /\n/, slurp("$repo/$f");
    my ($in, $start, $indent, @body);
    for my $i (0 .. $#lines) {
        my $l = $lines[$i];
        if (!$in && $l =~ /^(\s*)```nginx\s*$/) {
            ($in, $start, $indent, @body) = (1, $i + 1, length $1);
            next;
        }
        next unless $in;
        if ($l =~ /^\s*```\s*$/) {
            $in = 0;
            # alternatives: a line "# or ..." starts the next one
            my @alt = ([]);
            for my $b (@body) {
                push @alt, [] if $b =~ /^\s*#\s*or\b/ && @{ $alt[-1] };
                push @{ $alt[-1] }, $b;
            }
            my $n = 0;
            for my $a (@alt) {
                $n++;
                my $where = "$f:$start" . (@alt > 1 ? " (alternative $n)" : '');
                push @blocks, [ $where, join("\n", @$a) . "\n" ];
            }
            next;
        }
        push @body, substr($l, 0, $indent) =~ /^\s*$/
            ? substr($l, $indent) : $l;
    }
    die "$f: a ```nginx block is not closed\n" if $in;
}

ok(@blocks >= 10, scalar(@blocks) . ' nginx blocks found in the docs');

###############################################################################
# what the operator's machine has, in the test directory

mkdir "$d/$_" for qw/tls log lib modules tmp/;
my $ssl = `openssl req -x509 -newkey rsa:2048 -nodes -days 2 \\
    -subj /CN=localhost -keyout '$d/tls/test.key' -out '$d/tls/test.crt' 2>&1`;
die "openssl req failed:\n$ssl" if $?;

$t->write_file('modules/im.conf',
    "load_module $stream_module;\nload_module $module;\n");

sub localize {
    my ($c) = @_;
    $c =~ s{/usr/lib/nginx/modules/ngx_im_module\.so}{$module}g;
    $c =~ s{/usr/lib/nginx/modules/ngx_stream_module\.so}{$stream_module}g;
    $c =~ s{/etc/nginx/modules-enabled/\*\.conf}{$d/modules/*.conf}g;
    $c =~ s{/etc/nginx/\S+\.(?:crt|pem)\b}{$d/tls/test.crt}g;
    $c =~ s{/etc/nginx/\S+\.key\b}{$d/tls/test.key}g;
    $c =~ s{/var/log/nginx/}{$d/log/}g;
    $c =~ s{/var/lib/nginx/}{$d/lib/}g;
    $c =~ s{/run/nginx\.pid}{$d/nginx.pid}g;
    $c =~ s{\b[\w-]+(?:\.[\w-]+)*\.(?:internal|example\.com)\b}{127.0.0.1}g;
    $c =~ s{(https?://)backend\b}{${1}127.0.0.1}g;
    return $c;
}

my $temp = join '', map { "    ${_}_temp_path $d/tmp;\n" }
    qw/client_body proxy fastcgi uwsgi scgi/;

# the contexts a fragment is tried in, the outermost first
sub contexts {
    my ($b) = @_;
    my $mods = $b =~ /^\s*(?:load_module|include\s+\S*modules)/m ? ''
        : "load_module $stream_module;\nload_module $module;\n";
    my $head = "${mods}pid $d/nginx.pid;\nerror_log $d/log/error.log;\n";
    my $events = $b =~ /^events\s*\{/m ? '' : "events { }\n";
    my $cert = $b =~ /^\s*ssl_certificate\s/m ? ''
        : "ssl_certificate $d/tls/test.crt;\n"
        . "ssl_certificate_key $d/tls/test.key;\n";

    (my $main = $b) =~ s/^(http\s*\{\s*\n)/$1$temp/m;
    return (
        # load_module must come before the first block: events last
        main => "$head$main$events",
        http => "$head${events}http {\n$temp$b}\n",
        server => "$head${events}http {\n$temp"
            . "server {\nlisten 127.0.0.1:8080;\n$cert$b}\n}\n",
        location => "$head${events}http {\n$temp"
            . "server {\nlisten 127.0.0.1:8080;\n"
            . "location /example/ {\n$b}\n}\n}\n",
        stream => "$head${events}stream {\n"
            . "server {\nlisten 127.0.0.1:8081;\n$cert$b}\n}\n",
    );
}

my $n = 0;
for my $block (@blocks) {
    my ($where, $text) = @$block;
    my $b = localize($text);
    $n++;

    # comments aside (a "# or unix:/run/..." names an alternative)
    my @outside = grep {
        !/^\s*load_module\s+\Q$stream_module\E;/
            && m{(?<![\w.])(/(?:etc|var|run|usr)/\S+)}
    } map { s/#.*//r } split /\n/, $b;
    is(join("\n", @outside), '', "$where: no path outside the test dir");

    my @tried;
    my @ctx = contexts($b);
    my $passed;
    while (my ($ctx, $conf) = splice @ctx, 0, 2) {
        $t->write_file("block$n-$ctx.conf", $conf);
        my $out = `'$nginx' -t -p '$d/' -c '$d/block$n-$ctx.conf' 2>&1`;
        if ($? == 0) {
            $passed = $ctx;
            last;
        }
        push @tried, "--- as $ctx:\n$out";
    }
    ok(defined $passed, "$where: nginx -t passes"
        . (defined $passed ? " (in $passed)" : ''))
        or diag("$text\n" . join '', @tried);
}

$t->done_testing;
