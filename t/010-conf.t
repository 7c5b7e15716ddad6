#!/usr/bin/perl

# The shipped configurations pass `nginx -t` with the built module:
#   conf/nginx.conf   production example, with its paths moved into the test
#                     directory (module, certificate, pid, logs, cache, temp);
#   conf/dev.conf.in  development template, rendered by tools/im-devrun
#                     --config-only exactly as `make -f Makefile.dev run` does.
# And a mistake nginx -t catches: im_websocket with no im_auth (every
# handshake would answer 500) fails, naming the directive, its place and
# the fix; im_auth inherited from the server level, or the echo test mode,
# pass. So does an im_auth that no location can answer (none matches, only
# "location /" serving files, the WebSocket location itself, a named
# location), while exact, prefix, regex and nested locations, and a
# "location /" that proxies, pass.
# im_msg_rate without im_zone fails (its buckets live there), and so
# does a rate that is not "Nr/s" or "Nr/m"; im_send_buffer above 1024m fails.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;    # skips everything when the module is not built

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl/);
$t->plan(39);

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

# nginx -t; returns (exit status, output)
sub nginx_t {
    my ($prefix, $conf) = @_;
    my $out = `'$nginx' -t -p '$prefix/' -c '$conf' 2>&1`;
    my $rc = $? >> 8;
    $t->check_output($out);
    return ($rc, $out);
}

###############################################################################
# production example

mkdir "$d/prod";
mkdir "$d/prod/$_" for qw/ssl logs cache tmp/;

my $ssl = `openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \\
    -keyout '$d/prod/ssl/im.key' -out '$d/prod/ssl/im.crt' 2>&1`;
die "openssl req failed:\n$ssl" if $?;

my $conf = slurp("$repo/conf/nginx.conf");

# every path of the example must be one we know how to move
my %moved = (
    '/usr/lib/nginx/modules/ngx_im_module.so'     => $module,
    '/usr/lib/nginx/modules/ngx_stream_module.so' => $stream_module,
    '/etc/nginx/ssl/'                             => "$d/prod/ssl/",
    '/run/nginx.pid'                              => "$d/prod/nginx.pid",
    '/var/log/nginx/'                             => "$d/prod/logs/",
    '/var/lib/nginx/im_auth'                      => "$d/prod/cache/im_auth",
);
for my $from (sort { length $b <=> length $a } keys %moved) {
    my $to = $moved{$from};
    $conf =~ s/\Q$from\E/$to/g;
}

my $path_re = qr/^\s*(?:load_module|pid|error_log|access_log|include|root|alias
    |ssl_\w+|\w+_temp_path|proxy_cache_path)\s+(\/\S*)/x;
my @left = grep {
    /$path_re/ && index($1, "$d/") != 0 && $1 !~ /^\Q$module\E;?$|^\Q$stream_module\E;?$/
} split /\n/, $conf;
is(join("\n", @left), '', 'production example: no path left outside the test dir');

# temp paths are compiled-in defaults (/var/lib/nginx/...): add ours
my $temp = join '', map { "    ${_}_temp_path $d/prod/tmp/$_;\n" }
    qw/client_body proxy fastcgi uwsgi scgi/;
$conf =~ s/^(http\s*\{\s*\n)/$1$temp/m or die "no http block\n";

$t->write_file('prod/nginx.conf', $conf);

my ($rc, $out) = nginx_t("$d/prod", "$d/prod/nginx.conf");
is($rc, 0, 'production example: nginx -t exits 0') or diag($out);
like($out, qr/test is successful/, 'production example: test is successful');

###############################################################################
# development template, rendered by im-devrun itself

{
    local $ENV{IM_DEV_DIR} = "$d/dev";
    local $ENV{IM_MODULE} = $module;
    local $ENV{IM_STREAM_MODULE} = $stream_module;
    my $r = `'$repo/tools/im-devrun' --config-only 2>&1`;
    is($?, 0, 'im-devrun --config-only renders the template') or diag($r);
}

($rc, $out) = nginx_t("$d/dev", "$d/dev/nginx.conf");
is($rc, 0, 'dev template: nginx -t exits 0') or diag($out);
like($out, qr/test is successful/, 'dev template: test is successful');

###############################################################################
# im_websocket without im_auth

sub small_conf {
    my ($server, $location, $more) = @_;
    $more //= '';
    return <<"EOF";
load_module $stream_module;
load_module $module;
pid $d/small/nginx.pid;
error_log $d/small/error.log;
events { }
http {
    client_body_temp_path $d/small/tmp;
    proxy_temp_path $d/small/tmp;
    fastcgi_temp_path $d/small/tmp;
    uwsgi_temp_path $d/small/tmp;
    scgi_temp_path $d/small/tmp;
    access_log off;
    server {
        listen 127.0.0.1:8080;
        $server
        location = /ws { $location }
        location = /_auth { internal; return 200 '{"result":"denied"}'; }
        $more
    }
}
EOF
}

mkdir "$d/small";
mkdir "$d/small/tmp";

$t->write_file('small/none.conf', small_conf('', 'im_websocket;'));
($rc, $out) = nginx_t("$d/small", "$d/small/none.conf");
isnt($rc, 0, 'im_websocket without im_auth: nginx -t fails');
like($out, qr/"im_websocket" in \S*none\.conf:\d+ has no "im_auth"/,
     '... naming the directive and where it is');
like($out, qr/add "im_auth \/_auth;"/, '... and the fix');

$t->write_file('small/server.conf',
    small_conf('im_auth /_auth;', 'im_websocket;'));
($rc, $out) = nginx_t("$d/small", "$d/small/server.conf");
is($rc, 0, 'im_auth at the server level serves the location') or diag($out);

$t->write_file('small/echo.conf', small_conf('', 'im_websocket_echo;'));
($rc, $out) = nginx_t("$d/small", "$d/small/echo.conf");
is($rc, 0, 'the echo test mode needs no im_auth') or diag($out);

###############################################################################
# im_auth naming no location that can answer

my $uc = 'proxy_pass http://127.0.0.1:9;';
for my $case (
    [ 'nowhere', '/nope', '', qr/no location of this server matches it/ ],
    [ 'files', '/nope', "location / { root $d/small; }",
      qr/only "location \/" matches it/ ],
    [ 'itself', '/ws', '', qr/it is the WebSocket location itself/ ],
    [ 'named', '@auth', "location \@auth { $uc }",
      qr/must be a URI starting with "\/"/ ],
) {
    my ($name, $auth, $more, $why) = @$case;
    $t->write_file("small/$name.conf",
        small_conf('', "im_websocket; im_auth $auth;", $more));
    ($rc, $out) = nginx_t("$d/small", "$d/small/$name.conf");
    isnt($rc, 0, "im_auth $auth ($name): nginx -t fails");
    like($out, qr/"im_auth \Q$auth\E" of the "im_websocket" in \S*$name\.conf:\d+ names no location that can answer/,
        "... naming the directive and where it is ($name)");
    like($out, $why, "... and why ($name)");
    like($out, qr/add "location = \Q$auth\E \{ \.\.\. proxy_pass/,
        "... and the fix ($name)");
}

for my $case (
    [ 'args', '/_auth?from=ws', '' ],
    [ 'prefix', '/auth/check', "location /auth/ { $uc }" ],
    [ 'regex', '/check', "location ~ ^/check\$ { $uc }" ],
    [ 'nested', '/a/auth', "location /a/ { location /a/auth { $uc } }" ],
    [ 'root-proxy', '/other', "location / { $uc }" ],
) {
    my ($name, $auth, $more) = @$case;
    $t->write_file("small/$name.conf",
        small_conf('', "im_websocket; im_auth $auth;", $more));
    ($rc, $out) = nginx_t("$d/small", "$d/small/$name.conf");
    is($rc, 0, "im_auth $auth ($name) is answered: nginx -t passes")
        or diag($out);
}

###############################################################################
# im_msg_rate: needs im_zone, takes Nr/s or Nr/m

my $base = small_conf('im_auth /_auth;', 'im_websocket;');

$t->write_file('small/rate.conf', $base . "im_msg_rate 10r/s burst=5;\n");
($rc, $out) = nginx_t("$d/small", "$d/small/rate.conf");
isnt($rc, 0, 'im_msg_rate without im_zone: nginx -t fails');
like($out, qr/im_msg_rate needs im_zone/, '... saying why');

$t->write_file('small/rate2.conf',
    $base . "im_zone im 1m;\nim_msg_rate 30r/m burst=5;\n");
($rc, $out) = nginx_t("$d/small", "$d/small/rate2.conf");
is($rc, 0, 'im_msg_rate 30r/m burst=5 with im_zone passes') or diag($out);

$t->write_file('small/rate3.conf',
    $base . "im_zone im 1m;\nim_msg_rate 10r/h;\n");
($rc, $out) = nginx_t("$d/small", "$d/small/rate3.conf");
like($out, qr/invalid im_msg_rate "10r\/h"/, 'im_msg_rate 10r/h is refused');

# im_send_buffer: a session counts its unsent bytes in 32 bits (decision
# 039), so 1024m is the most
$t->write_file('small/sb.conf', $base . "im_send_buffer 1024m;\n");
($rc, $out) = nginx_t("$d/small", "$d/small/sb.conf");
is($rc, 0, 'im_send_buffer 1024m passes') or diag($out);

$t->write_file('small/sb2.conf', $base . "im_send_buffer 1025m;\n");
($rc, $out) = nginx_t("$d/small", "$d/small/sb2.conf");
isnt($rc, 0, 'im_send_buffer 1025m: nginx -t fails');
like($out, qr/im_send_buffer cannot exceed 1024m/, '... saying why');
