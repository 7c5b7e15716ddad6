#!/usr/bin/perl

# tools/im-devrun (what `make -f Makefile.dev run` starts) comes up and goes
# away cleanly: on ports of its own (IM_DEV_*_PORT, so a running dev server
# is not disturbed) it answers a WebSocket upgrade on /ws with 101, the same
# over TLS on /wss, accepts TCP on the API port, checks logins with the dev
# user centre and serves the chat page;
# each session leaves a line in im_session.log at its end; a reload ends
# while a client stays connected (the old worker goes at
# worker_shutdown_timeout, 10 s); after SIGINT it exits 0 and no process it
# started (nginx master and workers, redis-server, im-usercentre) is left,
# within a bound.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use MIME::Base64 qw/encode_base64/;
use POSIX qw/WNOHANG/;
use Time::HiRes qw/time sleep/;

use Test::Nginx qw/free_port wait_until/;
use IM::Client;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl redis mojo socket_ssl
    openssl/);
$t->has_daemon('redis-server')->has_daemon('redis-cli');

my $repo = $t->repo;
plan(skip_all => 'tools/im-usercentre missing')
    unless -x "$repo/tools/im-usercentre";

$t->plan(24);

my $d = $t->testdir;
my $dir = "$d/run";
my %port = map { $_ => free_port() } qw/WS WSS TCP REDIS UC/;

# a users file of our own: the test doesn't depend on conf/users.txt
$t->write_file('users.txt', "alice alice-secret 1001\nbob bob-secret 1002\n");

$ENV{IM_DEV_DIR} = $dir;
$ENV{IM_DEV_USERS} = "$d/users.txt";
$ENV{IM_MODULE} = $t->im_module;
$ENV{IM_STREAM_MODULE} = $Test::Nginx::STREAM_MODULE;
$ENV{IM_NGINX} = $Test::Nginx::NGINX;
$ENV{"IM_DEV_${_}_PORT"} = $port{$_} for keys %port;

# the harness kills it (TERM, then KILL) at the end if it is still there
$t->run_daemon("$repo/tools/im-devrun");
my $devrun = $t->daemon_pid;

my $TIMEOUT = 30;

###############################################################################

sub alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    open my $f, '<', "/proc/$pid/stat" or return 0;
    my $st = <$f> // '';
    return $st !~ /\)\s+[ZX]\s/;
}

sub cmdline {
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/cmdline" or return '';
    local $/;
    my $c = <$f> // '';
    $c =~ tr/\0/ /;
    return $c;
}

# pid -> ppid of every process
sub ptable {
    my %pp;
    opendir my $dh, '/proc' or return;
    for my $p (grep { /^\d+$/ } readdir $dh) {
        open my $f, '<', "/proc/$p/stat" or next;
        my $st = <$f> // next;
        $pp{$p} = $1 if $st =~ /\)\s+\S+\s+(\d+)/;
    }
    return %pp;
}

sub descendants {
    my ($root) = @_;
    my %pp = ptable();
    my @out;
    my @todo = ($root);
    while (defined(my $p = shift @todo)) {
        my @kids = grep { $pp{$_} == $p } keys %pp;
        push @out, @kids;
        push @todo, @kids;
    }
    return @out;
}

sub port_open {
    my ($p) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$p", Timeout => 1);
    return defined $s ? 1 : 0;
}

# WebSocket opening handshake; returns the status line
sub ws_upgrade {
    my ($port, $path, $ssl) = @_;
    my $key = encode_base64(join('', map { chr int rand 256 } 1 .. 16), '');
    my $r = Test::Nginx::http(
        "GET $path HTTP/1.1\r\n"
        . "Host: 127.0.0.1:$port\r\n"
        . "Upgrade: websocket\r\n"
        . "Connection: Upgrade\r\n"
        . "Sec-WebSocket-Key: $key\r\n"
        . "Sec-WebSocket-Version: 13\r\n"
        . "Origin: http://127.0.0.1:$port\r\n\r\n",
        port => $port, SSL => $ssl, start => 1) or return '';
    # read the response head only: the connection stays open afterwards
    my $head = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        while ($head !~ /\r\n\r\n/) {
            my $n = $r->sysread(my $buf, 4096);
            last unless $n;
            $head .= $buf;
        }
        alarm 0;
    };
    alarm 0;
    close $r;
    my ($status) = $head =~ /\A([^\r\n]*)/;
    return $status // '';
}

sub devrun_output { $t->daemon_log($devrun) }

###############################################################################

my $up = wait_until(sub {
    return -1 unless alive($devrun);
    return devrun_output() =~ /dev server is up/ ? 1 : 0;
}, $TIMEOUT);
ok($up && $up > 0, 'im-devrun reports the server up')
    or diag(devrun_output());

like(ws_upgrade($port{WS}, '/ws', 0), qr{^HTTP/1\.1 101\b},
    "ws://127.0.0.1:$port{WS}/ws upgrades (101)");
like(ws_upgrade($port{WSS}, '/wss', 1), qr{^HTTP/1\.1 101\b},
    "wss://127.0.0.1:$port{WSS}/wss upgrades (101)");
ok(port_open($port{TCP}), "TCP API accepts on 127.0.0.1:$port{TCP}");

# the auth location reaches the dev user centre (CONNECT_ACK 0, and 3)
{
    my $alice = IM::Client->new(port => $port{WS}, path => '/ws');
    is($alice->login('alice', 'alice-secret'), 0, 'alice logs in over ws');
    my $bob = IM::Client->new(port => $port{WSS}, path => '/wss', ssl => 1);
    is($bob->login('bob', 'bob-secret'), 0, 'bob logs in over wss');
    my $mallory = IM::Client->new(port => $port{WS}, path => '/ws');
    is($mallory->login('alice', 'wrong'), 3, 'a wrong password gets code 3');
    $_->close for $alice, $bob, $mallory;
}

# one line per session in im_session.log, written at its end
{
    my $log = sub { -f "$dir/im_session.log"
        ? $t->read_file("$dir/im_session.log") : '' };
    ok(wait_until(sub {
        my $l = $log->();
        return $l =~ /uid=1001 client=0 .*end="closed by client"/
            && $l =~ /uid=1002 client=0 .*end="closed by client"/
            && $l =~ /uid=0 .*end="login refused"/;
    }, $TIMEOUT), 'im_session.log: a line at the end of each session')
        or diag($log->());
}

# a reload with a client still connected: the old worker goes at
# worker_shutdown_timeout (10 s) instead of waiting for the client
{
    my $carol = IM::Client->new(port => $port{WS}, path => '/ws');
    is($carol->login('alice', 'alice-secret'), 0,
        'a client logged in before a reload');
    my ($master) = grep { cmdline($_) =~ /nginx: master/ }
        descendants($devrun);
    my @old = grep { cmdline($_) =~ /nginx: worker/ } descendants($master);
    kill 'HUP', $master;
    ok(@old && wait_until(sub { !grep { alive($_) } @old }, 10 + $TIMEOUT),
        'reload: the old workers exit although the client stays connected')
        or diag("old workers: @old");
    $carol->close;
}

SKIP: {
    skip 'js/web/index.html absent', 1 unless -f "$repo/js/web/index.html";
    like(Test::Nginx::http_get('/', port => $port{WS}) // '',
        qr{^HTTP/1\.1 200\b}, 'chat page served on /');
}

like(devrun_output(), qr{ws://127\.0\.0\.1:$port{WS}/ws.*wss://127\.0\.0\.1:$port{WSS}/wss.*127\.0\.0\.1:$port{TCP}}s,
    'the URLs are printed');
like(devrun_output(), qr/alice\s+alice-secret\s+1001/, 'the example users are printed');
like(devrun_output(), qr{http://127\.0\.0\.1:$port{WS}/api/.*GET\s+/api/presence\?uid=1001,1002.*POST\s+/api/publish.*POST\s+/api/kick.*GET\s+/api/inbox\?uid=1002.*DELETE\s+/api/inbox\?uid=1002&msgid=}s,
    'the admin API URLs are printed');

# the admin API: bob is online (logged in again), alice sends him one
{
    my $bob = IM::Client->new(port => $port{WS}, path => '/ws');
    is($bob->login('bob', 'bob-secret'), 0, 'bob logs in again');
    my $p;
    wait_until(sub {
        my $r = Test::Nginx::http_get('/api/presence?uid=1001,1002',
            port => $port{WS}) // '';
        ($p) = $r =~ /\r\n\r\n(.*)\z/s;
        return ($p // '') =~ /"uid":1002,"sessions":\[\{/;
    }, $TIMEOUT);
    like($p // '', qr/"uid":1002,"sessions":\[\{"node":/,
        'GET /api/presence?uid=1001,1002 lists bob\'s session');
    my $body = '{"from":1001,"to":1002,"payload":"hi"}';
    my $r = Test::Nginx::http("POST /api/publish HTTP/1.0\r\n"
        . "Host: localhost\r\nContent-Length: " . length($body)
        . "\r\n\r\n", port => $port{WS}, body => $body) // '';
    like($r, qr/^HTTP\/1\.1 200.*"outcome":"accepted"/s,
        'POST /api/publish is accepted');
    my $m = $bob->expect(cmd => 3);
    is($m && $m->{payload}, 'hi', 'bob gets it');
    $bob->close;
}

chomp(my $redis_members = `redis-cli -p $port{REDIS} -n 1 SMEMBERS im_group:1 2>&1`);
is(join(' ', sort split /\s+/, $redis_members), '1001 1002 1003',
    'group 1 seeded in redis db 1');

# everything im-devrun started: its children (redis, user centre, nginx
# master) and theirs (nginx workers)
my @started = descendants($devrun);
my @names = map { cmdline($_) } @started;
ok((grep { /nginx: master/ } @names) && (grep { /redis-server/ } @names)
    && (grep { /im-usercentre/ } @names), 'nginx, redis and the user centre run')
    or diag(join "\n", @names);

###############################################################################

kill 'INT', $devrun;
my $t0 = time;
my $exited = wait_until(sub { waitpid($devrun, WNOHANG) == $devrun }, $TIMEOUT);
my $status = $?;
ok($exited && $status == 0, 'im-devrun exits 0 after SIGINT')
    or diag(sprintf("exited: %s, status %d\n%s", $exited ? 'yes' : 'no',
        $status, devrun_output()));
$t->wait_daemon($devrun, 0) if $exited;    # the harness forgets it

my @left = grep { alive($_) } @started;
# and nothing else that runs from our directory or on our ports
opendir my $dh, '/proc';
for my $p (grep { /^\d+$/ && $_ != $$ } readdir $dh) {
    my $c = cmdline($p);
    push @left, $p if alive($p) && (index($c, $dir) >= 0
        || $c =~ /im-usercentre.*:\Q$port{UC}\E\b|redis-server.*:\Q$port{REDIS}\E\b/);
}
my %u;
@left = grep { !$u{$_}++ } @left;
is(join("\n", map { "$_ " . cmdline($_) } @left), '',
    sprintf('no process left behind (%.1f s)', time - $t0));
kill 'KILL', @left if @left;

my @open = grep { port_open($port{$_}) } sort keys %port;
is("@open", '', 'every port closed');

# nginx logs to im-devrun's stderr: no alerts, crashes or emergencies there
is(join("\n", Test::Nginx::find_problems(devrun_output())), '',
    'no alerts in the dev server output');

###############################################################################
