#!/usr/bin/perl

# Self-test of the harness (t/lib): everything that does not need ngx_im.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw/time sleep/;
use IO::Socket::INET;
use IO::Select;
use JSON::PP ();

use Test::Nginx qw/port free_port find_problems http http_get http_start
    http_end http_content alive sanitizer_reports/;
use IM::Proto qw/:all/;
use IM::WS;
use IM::Client;
use IM::TCP;
use IM::Redis;
use IM::RedisCluster;
use IM::UserCentre;

my $t = Test::Nginx->new(im => 0)->has(qw/http stream redis mojo socket_ssl/)
    ->plan(128);

###############################################################################
# IM::Proto (the seed's examples and every other vector of docs/vectors.json:
# t/012-vectors.t)

my $ID = '550e8400e29b41d4a716446655440000';

is(hexdump(connect_msg('test', '123456', role => 1)),
    '01 00 04 74 65 73 74 00 06 31 32 33 34 35 36 01', 'CONNECT bytes');
is(connect_msg('u', 'p'), "\x01\x00\x01u\x00\x01p", 'CONNECT without role');
is(connect_msg('u', 'p', role => 1, client_id => 2),
    "\x01\x00\x01u\x00\x01p\x01\x02", 'CONNECT with role and client id');
is(connect_msg('u', 'p', client_id => 3), "\x01\x00\x01u\x00\x01p\x00\x03",
    'CONNECT with client id only: role 0');
is(hexdump(part_publish_msg(1234, $ID, [1234, 1235], 'hello world')),
    '0b 00 00 04 d2 ' . hexdump($ID)
    . ' 00 02 00 00 04 d2 00 00 04 d3 00 0b ' . hexdump('hello world'),
    'GROUP_PART_PUBLISH bytes');
is(tcp_frame(publish_msg(1234, $ID, 'hello world')),
    pack('N', 50) . publish_msg(1234, $ID, 'hello world'), 'TCP framing');

my $m = decode_client(connect_msg('test', '123456', role => 1));
is_deeply([@$m{qw/cmd user pass role client_id error/}],
    [1, 'test', '123456', 1, undef, undef], 'decode CONNECT');
$m = decode_client(publish_msg(1234, $ID, 'hello world'));
is_deeply([@$m{qw/cmd to msgid payload/}], [3, 1234, $ID, 'hello world'],
    'decode PUBLISH C->S');
$m = decode_server(push_msg($ID, 'hello world'));
is_deeply([@$m{qw/cmd msgid payload error/}], [3, $ID, 'hello world', undef],
    'decode push S->C');
$m = decode_server(group_push_msg(7, $ID, 'x'));
is_deeply([@$m{qw/cmd gid msgid payload/}], [5, 7, $ID, 'x'],
    'decode group push');
$m = decode_server(part_push_msg(7, $ID, [1, 2, 3], 'y'));
is_deeply([@$m{qw/cmd gid uids payload/}], [11, 7, [1, 2, 3], 'y'],
    'decode part-group push');
is(decode_server(connect_ack(3))->{code}, 3, 'decode CONNECT_ACK');
$m = decode_server(invalid_packet(3, $ID));
is_deeply([@$m{qw/cmd bad_cmd msgid/}], [10, 3, $ID],
    'decode INVALID_PACKET with MsgId');
$m = decode_server(invalid_packet(99));
is_deeply([@$m{qw/cmd bad_cmd msgid error/}], [10, 99, undef, undef],
    'decode INVALID_PACKET without MsgId');
is_deeply([map { decode_server($_)->{name} } ping_msg(), ping_resp_msg(),
        disconnect_msg(), logout_msg()],
    [qw/PING PING_RESP DISCONNECT LOGOUT/], 'decode one-byte messages');
$m = decode_client(ack_msg(6, $ID . '_' . $ID));
is_deeply([@$m{qw/cmd msgid extra error/}], [6, $ID, "_$ID", undef],
    'long ack: extra bytes kept, no error');
is(decode_server(push_msg($ID, 'abc') . 'x')->{error}, 'trailing bytes',
    'trailing bytes flagged');
is(decode_server(substr(push_msg($ID, 'abc'), 0, -1))->{error}, 'truncated',
    'truncated message flagged');
is(decode_server("\x42")->{error}, 'unknown command', 'unknown command');
like(decode_server("\x42")->{name}, qr/UNKNOWN/, 'unknown command name');
my %ids = map { msgid() => 1 } 1 .. 1000;
is(scalar(keys %ids), 1000, 'msgid unique');
ok(!grep({ !/^[0-9a-f]{32}\z/ } keys %ids), 'msgid 32 lowercase hex');

###############################################################################
# the alert checker

my $log = <<'EOF';
2025/01/01 00:00:00 [notice] 1#1: start worker processes
2025/01/01 00:00:00 [debug] 2#2: epoll add event: fd:6 op:1 ev:00002001
2025/01/01 00:00:01 [alert] 1#1: worker process 2 exited on signal 11 (core dumped)
2025/01/01 00:00:02 [emerg] 1#1: unknown directive "foo" in nginx.conf:3
2025/01/01 00:00:03 [error] 2#2: *1 connect() failed (111: Connection refused)
==1234==ERROR: AddressSanitizer: heap-use-after-free on address 0x1
src/ngx_im_proto.c:10:5: runtime error: signed integer overflow
EOF
my @p = find_problems($log);
is(scalar @p, 4, 'checker: alert, emerg, sanitizer, ubsan lines found');
like($p[0], qr/exited on signal 11/, 'checker: crash line');
@p = find_problems($log, qr/exited on signal 11/, qr/unknown directive/);
is(scalar @p, 2, 'checker: allow list');
is(scalar(find_problems("2025/01/01 00:00:00 [info] 1#1: worker process 3 "
    . "exited on signal 9\n")), 1, 'checker: crash outside an alert line');
is(scalar(find_problems("[debug] 1#1: text with alert and emerg words\n")),
    0, 'checker: words alone are fine');

# a report with its stack, up to the next log line or report
my @r = sanitizer_reports($log . <<'EOF');
    #0 0x7f00 in ngx_im_proto_decode src/ngx_im_proto.c:10
    #1 0x7f01 in main src/core/nginx.c:401
2025/01/01 00:00:04 [debug] 2#2: after the report
src/ngx_im_wsframe.c:20:1: runtime error: shift exponent 40
EOF
is(scalar @r, 3, 'reports: three');
like($r[1], qr/runtime error: signed.*\n.*#0 .*\n.*#1 [^\n]*\z/,
    'reports: a report takes its stack and stops at the next log line');
like($r[2], qr/\Asrc\/ngx_im_wsframe\.c.*shift exponent 40\z/,
    'reports: the next report is one of its own');

# sanitizer lines of output handed to check_output are problems, alerts
# there are not (nginx -t may fail on purpose)
my $tco = Test::Nginx->new(im => 0);
$tco->check_output("nginx: [emerg] unknown directive\n"
    . "src/core/ngx_string.c:1:1: runtime error: x\n");
is(join('|', $tco->problems), 'src/core/ngx_string.c:1:1: runtime error: x',
    'check_output: the sanitizer line only');
$tco->allow_alerts(qr/runtime error: x/);
is(scalar($tco->problems), 0, 'check_output: allow_alerts applies');

###############################################################################
# plain nginx with two port placeholders (plus stream)

$t->write_file('index.html', "root page\n");
$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen 127.0.0.1:%%PORT_8080%%;
        location = /one { return 200 "one\n"; }
        location = /dir { return 200 "%%TESTDIR%%\n"; }
    }

    server {
        listen 127.0.0.1:%%PORT_8081%%;
        location = /two { return 200 "two\n"; }
    }
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%PORT_8082%%;
        return "stream\n";
    }
}
EOF

my $conf = $t->read_file('nginx.conf');
unlike($conf, qr/%%/, 'all placeholders expanded');
like($conf, qr/load_module \S+ngx_stream_module\.so;/, 'stream module loaded');
isnt(port(8080), port(8081), 'distinct ports for distinct placeholders');
is(port(8080), port(8080), 'port() stable');
like($conf, qr/listen 127\.0\.0\.1:${\ port(8081)};/, 'placeholder = port()');

$t->run();
ok($t->master_pid, 'nginx runs');
like(http_get('/one'), qr/200 OK.*one$/s, 'first server');
like(http_get('/two', port => port(8081)), qr/200 OK.*two$/s,
    'second server');
like(http_content(http_get('/dir')), qr/^\Q${\ $t->testdir}\E$/m,
    '%%TESTDIR%% expanded');
like(http_get('/index.html'), qr/root page/, 'root is the test dir');
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8082));
is($s && scalar(<$s>), "stream\n", 'stream server');

my @w1 = $t->worker_pids;
ok(@w1 >= 1, 'worker pids known');
$t->reload();
my @w2 = $t->worker_pids;
ok((grep { my $x = $_; !grep { $_ == $x } @w1 } @w2), 'reload: new workers');
like(http_get('/one'), qr/one$/, 'served after reload');

my $mark = $t->log_mark;
http_get('/nowhere');
ok($t->wait_for_log(qr/open\(\) ".*nowhere" failed/, from => $mark),
    'wait_for_log sees new lines');

my $master = $t->master_pid;
$t->stop();
ok(!alive($master), 'stop: master gone');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)),
    'port closed after stop');
is(join("\n", $t->problems), '', 'no problems in error.log so far');

# a failing start dies with the log
$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
events { }
http { server { listen 127.0.0.1:%%PORT_8080%%; no_such_directive; } }
EOF
eval { $t->run(); };
like($@, qr/unknown directive "no_such_directive"/, 'failed start dies with log');
$t->allow_alerts(qr/no_such_directive/);

###############################################################################
# the module itself loads (only when built)

SKIP: {
    skip "ngx_im module not built (" . Test::Nginx->im_module . ")", 2
        unless -f Test::Nginx->im_module;

    my $t2 = Test::Nginx->new();
    $t2->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    server { listen 127.0.0.1:%%PORT_8090%%; location / { return 200 "im\n"; } }
}
EOF
    # (the module is whatever IM_MODULE names, not always ngx_im_module.so)
    my $im = Test::Nginx->im_module;
    like($t2->read_file('nginx.conf'),
        qr/ngx_stream_module\.so;\s*load_module \Q$im\E;/,
        'stream module loaded before ngx_im');
    $t2->run();
    like(http_get('/', port => port(8090)), qr/im$/, 'nginx with ngx_im runs');
}

###############################################################################
# Redis

my $r = IM::Redis->new(t => $t);
is($r->cmd('PING'), 'PONG', 'redis up');
like($r->addr, qr/^127\.0\.0\.1:\d+$/, 'redis addr');
is($r->cmd(SET => 'k1', "bin\x00\xff\r\n"), 'OK', 'SET');
is($r->cmd(GET => 'k1'), "bin\x00\xff\r\n", 'GET binary-safe');
is($r->select_cmd(1, SADD => 'im_group:7', 1001, 1002), 2, 'SADD in db 1');
is_deeply([sort @{$r->select_cmd(1, SMEMBERS => 'im_group:7')}],
    [1001, 1002], 'SMEMBERS in db 1');
is($r->cmd(EXISTS => 'im_group:7'), 0, 'db 0 untouched');
is($r->cmd(GET => 'nope'), undef, 'nil is undef');
eval { $r->cmd('NOSUCHCOMMAND') };
like($@, qr/^redis: ERR/, 'error reply dies');
$r->cmd(RPUSH => 'list', 'a', 'b');

$r->stop;
ok(!eval { IO::Socket::INET->new(PeerAddr => $r->addr) }, 'redis stopped');
$r->start;
is($r->cmd(GET => 'k1'), "bin\x00\xff\r\n", 'data survives restart (AOF)');
is_deeply($r->cmd(LRANGE => 'list', 0, -1), ['a', 'b'], 'list survives');
$r->cmd(SET => 'k2', 'v2');
$r->kill9;
$r->start;
is($r->cmd(GET => 'k2'), 'v2', 'data survives kill -9 (AOF)');
is($r->select_cmd(1, SCARD => 'im_group:7'), 2, 'db 1 survives');

# a cluster of three masters; a slot moved with its keys
{
    my $rc = IM::RedisCluster->new(t => $t, masters => 3);
    is(scalar(my @n = $rc->nodes), 3, 'cluster: three nodes');
    is($rc->slot('im:inbox:{42}'), 8000, 'cluster: slot of a tagged key');
    is($rc->cmd(RPUSH => 'im:inbox:{42}', 'a', 'b'), 2,
        'cluster: a command goes to the key\'s owner');
    my $from = $rc->owner('im:inbox:{42}');
    eval { (grep { $_ != $from } $rc->nodes)[0]->cmd(LLEN => 'im:inbox:{42}') };
    like($@, qr/^redis: MOVED 8000 127\.0\.0\.1:\d+/,
        'cluster: another node answers MOVED');
    my $to = (grep { $_ != $from } $rc->nodes)[0];
    $rc->move_slot(8000, $to);
    is($rc->owner('im:inbox:{42}'), $to, 'cluster: the slot moved');
    is_deeply($to->cmd(LRANGE => 'im:inbox:{42}', 0, -1), ['a', 'b'],
        'cluster: its keys moved with it');
    $rc->stop;
}

###############################################################################
# user centre

my $uc = IM::UserCentre->new(t => $t, users => <<'EOF');
# comment
alice alice-secret 1001
bob   bob-secret   denied

err   x status:500
gar   x garbage
slow  x delay:3:1005
js    x json:{"result":"pass"}
cls   x close
EOF

sub auth {
    my ($user, $pass, %o) = @_;
    my $body = "username=$user&password=$pass" . ($o{extra} // '');
    my $req = "POST /auth HTTP/1.0\r\nHost: localhost\r\n"
        . "Accept: application/json\r\n"
        . "Content-Type: application/x-www-form-urlencoded;charset=utf-8\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
    return http($req, port => $uc->port, %o);
}

like(auth('alice', 'alice-secret'), qr/^HTTP\/1\.\d 200.*\{"result":"pass","uid":1001\}$/s,
    'pass');
like(auth('alice', 'wrong'), qr/\{"result":"denied"\}$/, 'wrong password');
like(auth('bob', 'bob-secret'), qr/\{"result":"denied"\}$/, 'denied');
like(auth('mallory', 'x'), qr/\{"result":"denied"\}$/, 'unknown user');
like(auth('err', 'x'), qr/^HTTP\/1\.\d 500/, 'status:500');
my $g = auth('gar', 'x');
like($g, qr/^HTTP\/1\.\d 200/, 'garbage: 200');
ok(!eval { JSON::PP->new->decode(http_content($g)) }, 'garbage: not JSON');
like(auth('js', 'x'), qr/\{"result":"pass"\}$/, 'json: as given');
is(auth('cls', 'x') // '', '', 'close: no answer');

# concurrency is checked by order, not by the clock: the other request's
# answer comes while the delayed one has none yet (a user centre serving
# one request at a time would answer the delayed one first); the delay
# (3 s) only has to outlast one plain request on a loaded machine
my $t0 = time;
my $slow = http_start("POST /auth HTTP/1.0\r\nContent-Length: 24\r\n\r\n"
    . "username=slow&password=x", port => $uc->port);
like(auth('alice', 'alice-secret'), qr/1001/, 'other request answered');
ok($slow && !IO::Select->new($slow)->can_read(0),
    'while a delayed one waits (no answer to it yet)');
like(http_end($slow), qr/"uid":1005/, 'delayed answer');
ok(time - $t0 >= 2.9, 'after the delay');

$uc->set_users("alice alice-secret denied\n");
like(auth('alice', 'alice-secret'), qr/denied/, 'users file re-read');

auth('alice', 'p%26w', extra => '&role=1&client_id=2');
my ($last) = reverse $uc->requests;
is($last->{body}, 'username=alice&password=p%26w&role=1&client_id=2',
    'log: raw body');
is($last->{params}{password}, 'p&w', 'log: decoded params');
is($last->{accept}, 'application/json', 'log: Accept');
is($last->{content_type}, 'application/x-www-form-urlencoded;charset=utf-8',
    'log: Content-Type');

###############################################################################
# IM::WS / IM::Client / IM::TCP against small Mojolicious servers

my $wsport = free_port();
my $wssport = free_port();
$t->run_daemon(\&ws_server, $wsport, $wssport);
ok($t->waitforsocket("127.0.0.1:$wsport")
    && $t->waitforsocket("127.0.0.1:$wssport"), 'ws test server up')
    or diag($t->daemon_log);

my $ws = IM::WS->new(port => $wsport, path => '/echo');
ok($ws->upgraded, 'handshake');
is($ws->header('upgrade'), 'websocket', 'response headers');
my $all = join '', map { chr } 0 .. 255;
$ws->send_binary($all);
is($ws->recv_message(3), $all, 'binary round trip (all byte values)');
is($ws->last_opcode, 2, 'binary opcode');
$ws->send_fragmented(2, 'ab', "\x00c", 'd');
is($ws->recv_message(3), "ab\x00cd", 'fragmented send reassembled');
my $big = 'x' x 70000;
$ws->send_binary($big);
is(length($ws->recv_message(3) // ''), 70000, '64-bit length frames');
$ws->send_text("text \x{263a}");
is($ws->recv_message(3), "text \xe2\x98\xba", 'text message (bytes)');
is($ws->last_opcode, 1, 'text opcode');
is($ws->recv_message(0.3), undef, 'timeout: undef');
$ws->send_text('please-close');
is($ws->recv_message(3), undef, 'closed: undef');
is($ws->close_code, 4001, 'server close code');
ok($ws->wait_closed(3), 'server closed the connection');
ok(!$ws->frame_errors, 'no frame errors');

$ws = IM::WS->new(port => $wsport, path => '/echo');
$ws->close(1000);
ok($ws->wait_closed(3), 'client close: connection closed');
is($ws->close_code, 1000, 'client close: echoed code');

$ws = IM::WS->new(port => $wsport, path => '/nowhere');
is($ws->status, 404, 'non-101 answer observable');
ok(!$ws->upgraded, 'not upgraded');

$ws = IM::WS->new(port => $wssport, path => '/echo', ssl => 1);
ok($ws->upgraded, 'wss handshake');
$ws->send_binary($all);
is($ws->recv_message(3), $all, 'wss binary round trip');

# flood() stops when the peer stops reading (a server that never reads)
my $sinkport = free_port();
$t->run_daemon(sub {
    my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$_[0]",
        Listen => 5, ReuseAddr => 1) or die "listen: $!";
    my @keep;
    while (my $c = $l->accept) { push @keep, $c }
}, $sinkport);
$t->waitforsocket("127.0.0.1:$sinkport");
$ws = IM::WS->new(port => $sinkport, connect_only => 1, rcvbuf => 4096);
$ws->stop_reading;
# it stopped because the socket is full (not at the overall timeout, set
# far beyond what filling the buffers takes): a further write takes nothing
my $n = $ws->flood('z' x 16384, timeout => 60, stall => 0.3);
my $more = $ws->conn->write_nb('z');
ok($n > 0 && defined $more && $more == 0,
    "flood stops when the socket is full ($n sent)");
is($ws->recv_message(0.1), undef, 'stop_reading: nothing read');

# IM::Client against a fake IM server
my $c = IM::Client->new(port => $wsport, path => '/im');
is($c->login('alice', 'alice-secret', role => 1), 0, 'login: CONNECT_ACK 0');
my $id = $c->publish(1002, 'hello');
my $ack = $c->expect(cmd => 4, msgid => $id);
ok($ack, 'expect: PUB_ACK with our MsgId');
is($c->next->{cmd}, 7, 'next: queued PING');
my $push = $c->next;
is_deeply([$push->{cmd}, $push->{msgid}, $push->{text}, $push->{json}{to}],
    [3, $id, 'hello', 1002], 'push decoded (JSON convention)');
ok($c->nothing_for(0.3), 'nothing_for');
$c->ack($id);
is($c->expect(cmd => 3, timeout => 3)->{text}, "acked $id",
    'ack reached the server');

$c = IM::Client->new(port => $wsport, path => '/im', auto_pong => 1,
    auto_ack => 1);
is($c->login('bob', 'x'), 0, 'auto_pong login');
$id = $c->publish(1001, 'raw bytes', raw => 1);
my @got = map { $c->next } 1 .. 2;
is_deeply([map { $_->{cmd} } @got], [4, 3], 'auto_pong: PING skipped');
is($got[1]{payload}, 'raw bytes', 'raw payload');
my %texts = map { ($c->expect(cmd => 3) // {})->{text} // '' => 1 } 1 .. 2;
ok($texts{"acked $id"}, 'auto_ack acked the push');
ok($texts{'pong seen'}, 'auto_pong answered the PING');

# IM::TCP against a framed echo server
my $tcpport = free_port();
$t->run_daemon(\&tcp_server, $tcpport);
$t->waitforsocket("127.0.0.1:$tcpport");
my $tc = IM::TCP->new(port => $tcpport);
$tc->send_msg(publish_msg(1, $ID, 'x'));
is($tc->recv_msg(3), publish_msg(1, $ID, 'x'), 'tcp: framed round trip');
$tc->send_raw(substr(tcp_frame('abc'), 0, 3));
is($tc->recv_msg(0.3), undef, 'tcp: partial frame, nothing yet');
$tc->send_raw(substr(tcp_frame('abc'), 3));
is($tc->recv_msg(3), 'abc', 'tcp: completed frame');
$tc->send_msg('quit');
ok($tc->wait_closed(3), 'tcp: server closed');

###############################################################################
# helper servers (run in forked children)

sub ws_server {
    my ($port, $tlsport) = @_;
    require Mojolicious::Lite;
    require Mojo::Server::Daemon;
    my $app = Mojolicious->new;
    $app->log->level('fatal');
    my $r = $app->routes;

    $r->websocket('/echo')->to(cb => sub {
        my ($c) = @_;
        $c->inactivity_timeout(30);
        $c->tx->max_websocket_size(1 << 20);
        $c->on(binary => sub { $_[0]->send({binary => $_[1]}) });
        $c->on(text => sub {
            my ($c, $s) = @_;
            return $c->finish(4001) if $s eq 'please-close';
            $c->send({text => $s});
        });
    });

    $r->websocket('/im')->to(cb => sub {
        my ($c) = @_;
        $c->on(binary => sub {
            my ($c, $bytes) = @_;
            my $m = IM::Proto::decode_client($bytes);
            my $send = sub { $c->send({binary => $_[0]}) };
            if ($m->{cmd} == 1) {
                $send->(IM::Proto::connect_ack(0));
                $send->(IM::Proto::ping_msg());
            } elsif ($m->{cmd} == 3) {
                $send->(IM::Proto::pub_ack($m->{msgid}));
                $send->(IM::Proto::push_msg($m->{msgid}, $m->{payload}));
            } elsif ($m->{cmd} == 4) {
                $send->(IM::Proto::push_msg(IM::Proto::msgid(),
                    qq({"content":{"type":"text","text":"acked $m->{msgid}"}})));
            } elsif ($m->{cmd} == 8) {
                $send->(IM::Proto::push_msg(IM::Proto::msgid(),
                    '{"content":{"type":"text","text":"pong seen"}}'));
            }
        });
    });

    my $d = Mojo::Server::Daemon->new(app => $app, silent => 1,
        listen => ["http://127.0.0.1:$port", "https://127.0.0.1:$tlsport"]);
    $d->run;
}

sub tcp_server {
    my ($port) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
        Listen => 5, ReuseAddr => 1) or die "listen: $!";
    while (my $c = $l->accept) {
        my $buf = '';
        while (sysread($c, $buf, 65536, length $buf)) {
            while (my ($msg, $rest) = tcp_unframe($buf)) {
                $buf = $rest;
                if ($msg eq 'quit') {
                    close $c;
                    last;
                }
                syswrite($c, tcp_frame($msg));
            }
            last unless $c->opened;
        }
    }
}
