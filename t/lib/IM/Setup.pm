package IM::Setup;

# The standard nginx.conf of the client-session tests: ws on %%PORT_9095%%
# (/ws), wss on %%PORT_8443%% (/wss, self-signed certificate made in the
# test dir), the TCP backend API on %%PORT_19095%%, /status, and the
# internal /_auth location proxying to the scriptable user centre.
#
#   use IM::Setup qw/write_conf transports/;
#   write_conf($t, redis => $redis, uc => $uc, main => "im_close_grace 2s;");
#   $t->run;
#   for my $tr (transports()) {
#       my ($name, %o) = @$tr;                 # ('ws', port => .., path => '/ws')
#       my $c = IM::Client->new(%o, auto_pong => 1);
#   }
#   each_transport(sub { my ($name, $i, %o) = @_; ... });   # ws and wss at once
#   ok(scalar no_sessions_left(), 'no leak');                # /status check
#
# Options of write_conf:
#   redis, uc    IM::Redis / IM::UserCentre objects (required)
#   main         extra main-context directives (im_* timers ...)
#   http         extra http-context text
#   ws           extra directives in the /ws and /wss locations
#   auth         extra directives in /_auth (proxy_read_timeout 1s ...)
#   body         proxy_set_body value (default username/password)
#   workers      worker_processes (default 1)
#   events       the events block's directives (worker_connections 64;)
#   stream       0 leaves out the TCP API server (default 1)

use strict;
use warnings;

use Exporter qw/import/;
use Test::More ();
use Test2::IPC;    # tests of forked children count in the parent
use Test::Nginx qw/port/;

our @EXPORT_OK = qw/write_conf transports transport make_cert make_ca
    ssl_opts each_transport status no_sessions_left standard/;

# a self-signed certificate im.crt / im.key in the test dir
sub make_cert {
    my ($t) = @_;
    my $d = $t->testdir;
    return if -f "$d/im.crt";
    my $out = `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost -keyout '$d/im.key' -out '$d/im.crt' 2>&1`;
    die "openssl req failed:\n$out" if $?;
}

# a test CA <ca>.crt / <ca>.key in the test dir, and for each name in
# who a certificate it signed, <who>.crt / <who>.key (a Redis's, a node's
# client certificate), for the names san (default localhost, 127.0.0.1):
#   make_ca($t, 'ca', who => [qw/redis node/]);  make_ca($t, 'other');
#   make_ca($t, 'ca', who => ['redis'], san => 'DNS:redis.test');
sub make_ca {
    my ($t, $ca, %o) = @_;
    my @who = @{ $o{who} // [] };
    my $san = $o{san} // 'DNS:localhost,IP:127.0.0.1';
    my $d = $t->testdir;
    my $openssl = sub {
        my $out = `openssl $_[0] 2>&1`;
        die "openssl $_[0]:\n$out" if $?;
    };
    my $ec = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
    $openssl->("req -x509 $ec -days 2 -subj /CN=im-test-$ca"
        . " -keyout $d/$ca.key -out $d/$ca.crt");
    $t->write_file('ext.cnf', "subjectAltName=$san\n");
    for my $who (@who) {
        $openssl->("req $ec -subj /CN=$who -keyout $d/$who.key"
            . " -out $d/$who.csr");
        $openssl->("x509 -req -in $d/$who.csr -CA $d/$ca.crt"
            . " -CAkey $d/$ca.key -CAcreateserial -days 2"
            . " -extfile $d/ext.cnf -out $d/$who.crt");
    }
}

sub write_conf {
    my ($t, %o) = @_;
    my $redis = $o{redis} or die "write_conf: redis => required\n";
    my $uc = $o{uc} or die "write_conf: uc => required\n";
    make_cert($t);
    my $d = $t->testdir;
    my $workers = $o{workers} // 1;
    my $main = $o{main} // '';
    my $http = $o{http} // '';
    my $ws = $o{ws} // '';
    my $auth = $o{auth} // '';
    my $body = $o{body} // 'username=$im_username&password=$im_password';
    my $listen = $o{listen} // '';
    my $locations = $o{locations} // '';
    my $events = $o{events} // '';
    my $stream = ($o{stream} // 1) ? <<"S" : '';
stream {
    %%TEST_GLOBALS_STREAM%%
    server {
        listen 127.0.0.1:%%PORT_19095%%;
        im_tcp;
    }
}
S
    # no address: the main text names Redis (im_redis_sentinel)
    my $raddr = defined $redis->addr ? 'im_redis ' . $redis->addr . ';' : '';

    $t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes $workers;
$raddr
$main
events { $events }
http {
    %%TEST_GLOBALS_HTTP%%
    $http
    server {
        listen 127.0.0.1:%%PORT_9095%% $listen;
        listen 127.0.0.1:%%PORT_8443%% ssl;
        ssl_certificate     $d/im.crt;
        ssl_certificate_key $d/im.key;

        location = /ws  { im_websocket; im_auth /_auth; $ws }
        location = /wss { im_websocket; im_auth /_auth; $ws }
        ${\ $uc->auth_location(body => $body, extra => $auth) }
        location = /status { im_status; }
        location = /metrics { im_metrics; }
        $locations
    }
}
$stream
EOF
    return $t;
}

# one client TLS context for every wss connection: building one per
# connection (IO::Socket::SSL's default) costs ~150 ms, reusing it ~10 ms
my $CTX;
sub ssl_opts {
    require IO::Socket::SSL;
    $CTX //= IO::Socket::SSL::SSL_Context->new(
        SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_NONE());
    return { SSL_reuse_ctx => $CTX };
}

# A one-node test as most files start it: a redis-server, the user centre
# with alice (1001) and bob (1002) unless users => "name pass uid\n..."
# says otherwise, write_conf(%o) and nginx running. Returns ($t, $redis,
# $uc).
#   my ($t, $redis, $uc) = standard(stream => 0, main => 'im_alone off;');
sub standard {
    my (%o) = @_;
    require IM::Redis;
    require IM::UserCentre;
    my $users = delete $o{users}
        // "alice alice-secret 1001\nbob bob-secret 1002\n";
    my $t = Test::Nginx->new()->has(qw/http/);
    my $redis = IM::Redis->new(t => $t);
    my $uc = IM::UserCentre->new(t => $t, users => $users);
    write_conf($t, redis => $redis, uc => $uc, %o);
    $t->run();
    return ($t, $redis, $uc);
}

# [name, IM::Client/IM::WS options] of ws and wss
sub transports {
    return (
        ['ws',  port => port(9095), path => '/ws'],
        ['wss', port => port(8443), path => '/wss', ssl => 1, ssl_opts => ssl_opts()],
    );
}

# each_transport(sub { my ($name, $i, %o) = @_; ... }): the body once per
# transport ($i = 0 for ws, 1 for wss), both at once in forked children
# (their tests count in the parent); IM_SERIAL=1 (or serial => 1) runs them
# one after the other in this process. Bodies must not share uids.
sub each_transport {
    my ($code, %opt) = @_;
    my @tr = transports();
    if ($ENV{IM_SERIAL} || $opt{serial}) {
        for my $i (0 .. $#tr) {
            my ($name, %o) = @{$tr[$i]};
            $code->($name, $i, %o);
        }
        return;
    }
    my %kids;
    for my $i (0 .. $#tr) {
        my ($name, %o) = @{$tr[$i]};
        my $pid = fork() // die "fork: $!\n";
        if ($pid == 0) {
            my $ok = eval { $code->($name, $i, %o); 1 };
            Test::More::ok(0, "$name: the test body died: $@") unless $ok;
            exit 0;
        }
        $kids{$pid} = $name;
    }
    for my $pid (sort keys %kids) {
        waitpid($pid, 0);
        Test::More::ok(0, "$kids{$pid}: the test process exited with status $?") if $?;
    }
}

# /status of the (single) worker as a hash ({} when unreadable)
sub status {
    require JSON::PP;
    my $r = Test::Nginx::http_get('/status', port => port(9095)) // '';
    my ($body) = $r =~ /\r\n\r\n(.*)\z/s;
    return eval { JSON::PP::decode_json($body // '') } // {};
}

# after every client closed: true when /status shows no session and no
# user left within $timeout seconds (a leak check); ok() it yourself
sub no_sessions_left {
    my ($timeout) = @_;
    my $st;
    my $ok = Test::Nginx::wait_until(sub {
        $st = status();
        return defined $st->{sessions} && $st->{sessions} == 0
            && ($st->{users} // 0) == 0;
    }, $timeout // 6);
    return wantarray ? ($ok, $st) : $ok;
}

sub transport {
    my ($name) = @_;
    my ($tr) = grep { $_->[0] eq $name } transports();
    die "no transport $name\n" unless $tr;
    my (undef, %o) = @$tr;
    return %o;
}

1;
