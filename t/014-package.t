#!/usr/bin/perl

# The Debian package (debian/, make -f Makefile.dev package): built with
# dpkg-buildpackage into the test dir, installed with apt-get, run by
# Debian's /usr/sbin/nginx from the installed files only, then purged.
#
# The config loads modules as Debian's own nginx.conf does, through
# /etc/nginx/modules-enabled/*.conf, and nginx keeps its compiled-in prefix
# (/usr/share/nginx), so the snippet's relative "load_module modules/..."
# resolves as in production. Checks: the .deb's files and dependencies (the
# nginx ABI dh_nginx adds, the stream module, hiredis, cJSON); the snippet
# enabled after the stream module; a WebSocket login, a message and its ack
# (the inbox empties), a TCP API message; the workers mapped the installed
# .so; after the purge no file of the package and no symlink is left, and
# modules-enabled is as it was before.
#
# Root only (dpkg); CI runs as root. A machine where libnginx-mod-im is
# already installed is skipped: the test would replace and purge the
# owner's package. Two runs at once (two worktrees) take turns on a lock.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";

use Fcntl qw/:flock/;
use POSIX ();
use Time::HiRes qw/time sleep/;
use Test::Nginx qw/port wait_until/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;

my $PKG = 'libnginx-mod-im';
my $SO = '/usr/lib/nginx/modules/ngx_im_module.so';
my $AVAILABLE = '/usr/share/nginx/modules-available/mod-im.conf';
my $ENABLED_DIR = '/etc/nginx/modules-enabled';
my $ENABLED = "$ENABLED_DIR/70-mod-im.conf";
my $LOCK = '/tmp/ngx_im-package-test.lock';
my $LOCK_WAIT = 900;        # another run: build + test take about a minute

plan(skip_all => 'installs a Debian package: run as root') if $> != 0;

my $t = Test::Nginx->new(im => 0, system_prefix => 1)
    ->has(qw/http stream redis/);
my $d = $t->testdir;
my $repo = $t->repo;

open my $lock, '>', $LOCK or die "open $LOCK: $!\n";
my $until = time + $LOCK_WAIT;
until (flock $lock, LOCK_EX | LOCK_NB) {
    die "$LOCK still held by another run after ${LOCK_WAIT}s\n"
        if time > $until;
    sleep 1;
}

sub pkg_status {
    my $s = `dpkg-query -W -f='\${db:Status-Abbrev}' $PKG 2>/dev/null`;
    return $s // '';
}

if (pkg_status() =~ /^.[^n]/) {
    plan(skip_all => "$PKG is installed on this machine (dpkg-query: "
        . pkg_status() . "); the test would replace and purge it");
}

my %ENV_APT = (DEBIAN_FRONTEND => 'noninteractive');
my @APT = ('apt-get', '-y', '-o', 'DPkg::Lock::Timeout=600',
    '--no-install-recommends');

# run a command, output to a log in the test dir; true on success
sub run_logged {
    my ($log, @cmd) = @_;
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$d/$log" or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        # a make above us (make -f Makefile.dev test) must not lend its
        # job server to this one
        delete @ENV{qw/MAKEFLAGS MFLAGS MAKELEVEL/};
        @ENV{keys %ENV_APT} = values %ENV_APT;
        chdir $repo or POSIX::_exit(127);
        exec @cmd or POSIX::_exit(127);
    }
    waitpid($pid, 0);
    my $ok = $? == 0;
    unless ($ok) {
        my @l = split /\n/, $t->read_file($log);
        @l = @l[-30 .. -1] if @l > 30;
        diag("@cmd: status " . ($? >> 8) . "\n" . join("\n", @l));
    }
    return $ok;
}

my $installed = 0;

sub purge {
    return 1 unless $installed;
    $t->stop;
    my $ok = run_logged('purge.log', @APT, 'purge', $PKG);
    $installed = 0 if $ok;
    return $ok;
}

# a test that dies half-way still leaves the machine as it found it
END { purge() if $installed && $$ == $t->{_pid} }

sub enabled_list {
    opendir my $dh, $ENABLED_DIR or return '';
    return join ' ', sort grep { !/^\./ } readdir $dh;
}

###############################################################################
# build

my $t0 = time;
my $built = run_logged('build.log', 'make', '-f', 'Makefile.dev',
    '--no-print-directory', 'package', "PKG_DIR=$d/pkg");
my $t_build = time - $t0;
ok($built, 'make -f Makefile.dev package builds the .deb');
diag(sprintf "package build: %.1f s", $t_build);

my ($deb) = glob "$d/pkg/${PKG}_*.deb";
unless ($built && $deb) {
    fail("no $PKG .deb in $d/pkg");
    $t->done_testing;
    exit;
}

my $depends = `dpkg-deb -f '$deb' Depends`;
like($depends, qr/(?:^|,\s*)nginx-abi-[\d.]+-\d+(?:,|$)/m,
    'Depends: the nginx ABI (dh_nginx)');
like($depends, qr/(?:^|,\s*)libnginx-mod-stream\b/,
    'Depends: libnginx-mod-stream');
like($depends, qr/\blibhiredis[\d.]+\b/, 'Depends: hiredis (shlibs)');
like($depends, qr/\blibcjson\d+\b/, 'Depends: cJSON (shlibs)');

my $files = `dpkg-deb -c '$deb'`;
like($files, qr{ \./usr/lib/nginx/modules/ngx_im_module\.so$}m,
    '.deb holds the module');
like($files, qr{ \./usr/share/nginx/modules-available/mod-im\.conf$}m,
    '.deb holds the modules-available snippet');

###############################################################################
# install

my $enabled_before = enabled_list();
$t0 = time;
$installed = 1;     # from here on END purges, even after a half install
ok(run_logged('install.log', @APT, 'install', $deb), "apt-get install $deb");
my $t_install = time - $t0;
like(pkg_status(), qr/^ii/, "$PKG installed");

ok(-f $SO, "$SO installed");
is(readlink($ENABLED) // '', $AVAILABLE,
    "postinst enabled $ENABLED -> $AVAILABLE");
is($t->read_file($AVAILABLE), "load_module modules/ngx_im_module.so;\n",
    'the snippet loads the module by its prefix-relative path');

my @order = map { s{.*/}{}r } glob "$ENABLED_DIR/*.conf";
my ($i_stream) = grep { $order[$_] eq '50-mod-stream.conf' } 0 .. $#order;
my ($i_im) = grep { $order[$_] eq '70-mod-im.conf' } 0 .. $#order;
ok(defined $i_stream && defined $i_im && $i_stream < $i_im,
    "the stream module is loaded first (modules-enabled: @order)");

###############################################################################
# run Debian's nginx from the installed files

my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => <<'U');
alice alice-secret 1001
bob bob-secret 1002
U

$t->write_file_expand('nginx.conf', <<"EOF");
include $ENABLED_DIR/*.conf;
daemon on;
worker_processes 1;
worker_shutdown_timeout 3s;
im_redis ${\ $redis->addr };
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_9095%%;
        location = /ws { im_websocket; im_auth /_auth; }
        ${\ $uc->auth_location }
    }
}
stream {
    server {
        listen 127.0.0.1:%%PORT_19095%%;
        im_tcp;
    }
}
EOF
$t0 = time;
$t->run();

my @maps = map {
    my $m = eval { $t->read_file("/proc/$_/maps") } // '';
    index($m, $SO) >= 0 ? $_ : ();
} $t->worker_pids;
ok(scalar @maps, "the worker mapped $SO");

my $a = IM::Client->new(port => port(9095), auto_pong => 1);
is($a->login('alice', 'alice-secret'), 0, 'alice logs in over WebSocket');
my $b = IM::Client->new(port => port(9095), auto_pong => 1);
is($b->login('bob', 'bob-secret'), 0, 'bob logs in over WebSocket');

my $id = $a->publish(1002, 'hello from the package');
ok($a->expect(cmd => PUB_ACK, msgid => $id), 'alice: PUB_ACK');
my $m = $b->expect(cmd => PUBLISH);
is($m && $m->{msgid}, $id, 'bob: the push, same MsgId');
$b->ack($id);
ok(wait_until(sub { $redis->cmd('LLEN', 'im:inbox:1002') == 0 }),
    "bob's ack empties his inbox");

my $tcp = IM::TCP->new(port => port(19095));
my $id2 = msgid();
my $r = $tcp->request(publish_msg(1002, $id2, 'from the backend'));
ok($r && $r->{cmd} == PUB_ACK && $r->{msgid} eq $id2,
    'TCP API: PUB_ACK');
$m = $b->expect(cmd => PUBLISH);
is($m && $m->{msgid}, $id2, 'bob: the TCP API message');
$b->ack($id2) if $m;
my $t_smoke = time - $t0;

###############################################################################
# purge: the machine as found

ok(purge(), "apt-get purge $PKG");
like(pkg_status(), qr/^$|^.n/, "$PKG not installed");
ok(!-e $SO && !-e $AVAILABLE, 'module and snippet gone');
is(enabled_list(), $enabled_before,
    'modules-enabled as before (no link, no .removed link)');

diag(sprintf "package build %.1f s, install %.1f s, nginx start to last check %.2f s",
    $t_build, $t_install, $t_smoke);

$t->done_testing;
