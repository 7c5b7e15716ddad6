#!/usr/bin/perl
# Session logs (docs/GUIDE.md 6): every session ends with one error-log line
# at info ("im: uid N client C session end: <reason>, <seconds> s, messages
# in I, out O", the client's address added by nginx) and one access-log line
# written at its end, WebSocket (ws and wss) and TCP API alike, whose
# $im_uid, $im_client_id, $im_session_time, $im_messages_in,
# $im_messages_out and $im_end_reason describe it. End reasons checked:
# logout, closed by client, kicked, re-push limit, login refused, protocol
# error, connect timeout, ping timeout (a second nginx with a 1 s ping), idle
# timeout (TCP), server shutdown. Before this, the access line of a session
# was written at login and said nothing about its end. A session that was
# online also ends with an "offline" event carrying the same reason.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port wait_until/;
use Time::HiRes qw/time/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Setup qw/make_cert transports each_transport/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t,
    users => "nobody * denied\n* * uid-from-name\n");
make_cert($t);
my $d = $t->testdir;

# ping 300 s: no heartbeat in the counts; re-push 1 s, once, for the
# re-push limit; grace 1 s after a kick or a refusal; CONNECT within 3 s
my $fmt = 'r=$im_end_reason|uid=$im_uid|cid=$im_client_id|t=$im_session_time'
    . '|in=$im_messages_in|out=$im_messages_out|st=$status|rt=$request_time'
    . '|sa=$server_addr|sp=$server_port|ra=$remote_addr'
    . '|un=$im_username|pw=$im_password';
$t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 1;
im_redis ${\ $redis->addr };
im_ping_interval 300s;
im_repush_interval 1s;
im_repush_max 1;
im_close_grace 1s;
im_connect_timeout 3s;
im_events_stream im:events maxlen=10000;
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    log_format im '$fmt';
    server {
        listen 127.0.0.1:%%PORT_9095%%;
        listen 127.0.0.1:%%PORT_8443%% ssl;
        ssl_certificate     $d/im.crt;
        ssl_certificate_key $d/im.key;

        location = /ws  { im_websocket; im_auth /_auth; access_log $d/im.log im; }
        location = /wss { im_websocket; im_auth /_auth; access_log $d/im.log im; }
        ${\ $uc->auth_location }
    }
}
stream {
    %%TEST_GLOBALS_STREAM%%
    log_format imtcp 'r=\$im_end_reason|t=\$im_session_time|in=\$im_messages_in|out=\$im_messages_out|st=\$status|sp=\$server_port';
    access_log $d/tcp.log imtcp;
    server {
        listen 127.0.0.1:%%PORT_19095%%;
        im_tcp;
    }
    server {
        listen 127.0.0.1:%%PORT_19096%%;
        im_tcp;
        im_tcp_timeout 1s;
    }
}
EOF
$t->run();

# "key=value|..." lines of an access log, as hashes
sub access_lines {
    my ($file) = @_;
    return () unless -f "$d/$file";
    return map { +{ map { split /=/, $_, 2 } split /\|/ } }
        grep { length } split /\n/, $t->read_file($file);
}

# the access line(s) matching %want (exact values), after a bounded wait
# for the first; _skip => n leaves out the first n lines of the file
sub access_for {
    my ($file, %want) = @_;
    my $skip = delete $want{_skip} // 0;
    my @l;
    wait_until(sub {
        my @all = access_lines($file);
        splice @all, 0, $skip;
        @l = grep { my $l = $_; !grep { ($l->{$_} // '') ne $want{$_} } keys %want }
            @all;
        return scalar @l;
    });
    return @l;
}

# the error-log "session end" lines of uid $who, or of 'backend' sessions
# (after a bounded wait; from the offset $from): [reason, seconds, in,
# out, rest of the line]
sub end_lines {
    my ($who, $from) = @_;
    my $re = $who =~ /^\d+$/
        ? qr/im: uid $who client \d+ session end: ([^,]+), (\d+\.\d{3}) s, messages in (\d+), out (\d+)(.*)/
        : qr/im: \Q$who\E session end(?: before login)?: ([^,]+), (\d+\.\d{3}) s, messages in (\d+), out (\d+)(.*)/;
    my @l;
    wait_until(sub {
        @l = ();
        my $log = $t->error_log($from);
        while ($log =~ /$re/g) {
            push @l, [$1, $2, $3, $4, $5];
        }
        return scalar @l;
    });
    return @l;
}

# one session's two lines: the error-log line and the access line agree
sub check_session {
    my ($name, $uid, %e) = @_;
    my @err = end_lines($uid);
    is(scalar @err, 1, "$name: one session-end line at info");
    my ($why, $sec, $in, $out, $rest) = @{$err[0] // []};
    is($why, $e{reason}, "$name: error log: $e{reason}");
    like($rest // '', qr/client: 127\.0\.0\.1/, "$name: error log: the client's address");
    is($in, $e{in}, "$name: error log: messages in $e{in}") if defined $e{in};
    is($out, $e{out}, "$name: error log: messages out $e{out}") if defined $e{out};

    my @acc = access_for('im.log', uid => $uid);
    is(scalar @acc, 1, "$name: one access line for the session (at its end)");
    my $a = $acc[0] // {};
    is($a->{r}, $e{reason}, "$name: \$im_end_reason");
    is($a->{st}, 101, "$name: \$status 101");
    is($a->{cid}, $e{cid} // 0, "$name: \$im_client_id");
    is($a->{in}, $in, "$name: \$im_messages_in as in the error log");
    is($a->{out}, $out, "$name: \$im_messages_out as in the error log");
    like($a->{t} // '', qr/^\d+\.\d{3}$/, "$name: \$im_session_time in seconds with ms");
    ok(abs(($a->{t} // -9) - ($sec // 9)) < 0.002,
        "$name: \$im_session_time as in the error log");
    is($a->{ra}, '127.0.0.1', "$name: \$remote_addr");
    is("$a->{un}/$a->{pw}", '-/-',
        "$name: no user name, no password (let go at login)");
    is($a->{sa}, '127.0.0.1', "$name: \$server_addr");
    return ($a, $sec);
}

my $base = 5000;
each_transport(sub {
    my ($name, $i, %o) = @_;
    my $b = $base + 100 * ($i + 1);
    my $sp = $o{port};

    # logout: CONNECT, PUBLISH, DISCONNECT in; CONNECT_ACK, PUB_ACK out
    my $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login('u' . ($b + 1), 'pw'), 0, "$name: logout: login");
    my $id = $c->publish($b + 99, 'to nobody online');
    ok($c->expect(cmd => PUB_ACK, msgid => $id), "$name: logout: PUB_ACK");
    $c->disconnect;
    ok($c->wait_closed($Test::Nginx::TIMEOUT), "$name: logout: closed");
    my ($a) = check_session("$name: logout", $b + 1,
        reason => 'logout', in => 3, out => 2);
    is($a->{sp}, $sp, "$name: logout: \$server_port");
    ok(defined $a->{rt} && $a->{rt} =~ /^\d+\.\d{3}$/
        && abs($a->{rt} - $a->{t}) < 0.002,
        "$name: logout: \$request_time is the session's time");

    # closed by client (close frame), ClientId 3
    $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login('u' . ($b + 2), 'pw', role => 1, client_id => 3), 0,
        "$name: close frame: login");
    $c->close(1000);
    ok($c->wait_closed($Test::Nginx::TIMEOUT), "$name: close frame: closed");
    check_session("$name: close frame", $b + 2,
        reason => 'closed by client', in => 1, out => 1, cid => 3);

    # kicked: a second login of the same (uid, ClientId); the first one
    # gets LOGOUT and is closed after the grace
    my $k1 = IM::Client->new(%o, auto_pong => 1);
    my $k2 = IM::Client->new(%o, auto_pong => 1);
    is($k1->login('u' . ($b + 3), 'pw'), 0, "$name: kick: first login");
    is($k2->login('u' . ($b + 3), 'pw'), 0, "$name: kick: second login");
    ok($k1->expect(cmd => LOGOUT), "$name: kick: LOGOUT");
    ok($k1->wait_closed(1 + $Test::Nginx::TIMEOUT), "$name: kick: closed");
    my @kick = end_lines($b + 3);
    is(scalar @kick, 1, "$name: kick: one session-end line so far");
    is($kick[0][0], 'kicked', "$name: kick: error log: kicked");
    is_deeply([map { $_->{r} } access_for('im.log', uid => $b + 3)],
        ['kicked'], "$name: kick: access line: kicked");

    # re-push limit: a push never acked, re-pushed once after 1 s, then
    # the session is closed
    my $r = IM::Client->new(%o, auto_pong => 1);
    is($r->login('u' . ($b + 4), 'pw'), 0, "$name: re-push: login");
    $id = $k2->publish($b + 4, 'never acked');
    ok($r->expect(cmd => PUBLISH, msgid => $id), "$name: re-push: pushed");
    ok($r->wait_closed(2 + $Test::Nginx::TIMEOUT), "$name: re-push: closed");
    my @rp = end_lines($b + 4);
    is($rp[0] && $rp[0][0], 're-push limit', "$name: re-push: error log");
    ok($rp[0] && $rp[0][3] >= 3,
        "$name: re-push: out counts the push and its re-push");
    is_deeply([map { $_->{r} } access_for('im.log', uid => $b + 4)],
        ['re-push limit'], "$name: re-push: access line");

    $k2->disconnect;
    ok($k2->wait_closed($Test::Nginx::TIMEOUT), "$name: kick: second session closed");
    my @k2 = end_lines($b + 3);
    is_deeply([sort map { $_->[0] } @k2], ['kicked', 'logout'],
        "$name: kick: then the second session's logout");

    # protocol error: a text frame
    $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login('u' . ($b + 6), 'pw'), 0, "$name: text frame: login");
    $c->ws->send_text('hello');
    ok($c->wait_closed($Test::Nginx::TIMEOUT), "$name: text frame: closed");
    check_session("$name: text frame", $b + 6,
        reason => 'protocol error', in => 1, out => 1);
});

# sessions that never logged in: no uid; one line each per transport,
# told apart by $server_port
each_transport(sub {
    my ($name, $i, %o) = @_;
    my $sp = $o{port};

    my $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login('nobody', 'pw'), 3, "$name: refused: CONNECT_ACK 3");
    ok($c->wait_closed(1 + $Test::Nginx::TIMEOUT), "$name: refused: closed");
    my @l = access_for('im.log', sp => $sp, r => 'login refused');
    is(scalar @l, 1, "$name: refused: one access line");
    is($l[0] && $l[0]{uid}, '0', "$name: refused: \$im_uid 0");
    is($l[0] && "$l[0]{un}|$l[0]{pw}", 'nobody|-',
        "$name: refused: the user name, never the password");
    is($l[0] && "$l[0]{in}/$l[0]{out}", '1/1', "$name: refused: CONNECT in, CONNECT_ACK out");
    is($l[0] && $l[0]{st}, 101, "$name: refused: \$status 101");

    # no CONNECT within im_connect_timeout (3 s); the session's time is
    # at least that
    my $t0 = time;
    $c = IM::Client->new(%o, auto_pong => 1);
    ok($c->upgraded, "$name: silent: upgraded");
    ok($c->wait_closed(3 + $Test::Nginx::TIMEOUT), "$name: silent: closed");
    @l = access_for('im.log', sp => $sp, r => 'connect timeout');
    is(scalar @l, 1, "$name: silent: one access line");
    ok($l[0] && $l[0]{t} >= 2.99, "$name: silent: \$im_session_time not under 3 s: "
        . ($l[0] ? $l[0]{t} : 'none'));
    ok($l[0] && $l[0]{t} <= time - $t0 + 0.01,
        "$name: silent: nor over the client's own measure");
    is($l[0] && "$l[0]{in}/$l[0]{out}/$l[0]{uid}", '0/0/0', "$name: silent: nothing in or out");
});

# "offline" events (the Redis stream): the end reason and the session's
# time, only for sessions that were online
{
    require JSON::PP;
    my @ev;
    wait_until(sub {
        my $r = $redis->cmd(XRANGE => 'im:events', '-', '+') // [];
        @ev = grep { $_->{type} eq 'offline' }
            map { my %f = @{$_->[1]}; JSON::PP::decode_json($f{event}) } @$r;
        return @ev >= 12;
    });
    my %why;
    push @{$why{$_->{uid}}}, $_->{reason} for @ev;
    for my $i (0, 1) {
        my $b = $base + 100 * ($i + 1);
        my $name = (qw/ws wss/)[$i];
        is_deeply($why{$b + 1}, ['logout'], "$name: offline event: logout");
        is_deeply([sort @{$why{$b + 3} // []}], ['kicked', 'logout'],
            "$name: offline events: kicked, then the other session's logout");
        is_deeply($why{$b + 4}, ['re-push limit'],
            "$name: offline event: re-push limit");
    }
    ok(!grep({ $_->{uid} == 0 } @ev), 'no offline event without a login');
    ok(!grep({ ($_->{duration_ms} // '') !~ /^\d+$/ } @ev),
        'offline events: duration_ms');
}

my @before = grep { /session end before login/ } split /\n/, $t->error_log;
is(scalar(grep { /: login refused,/ } @before), 2, 'error log: two refused logins');
is(scalar(grep { /: connect timeout,/ } @before), 2, 'error log: two connect timeouts');

# TCP API: one line each in the stream access log (from here: run()
# probed the ports with connections of its own)
{
    my $mark = $t->log_mark;
    my $skip = () = access_lines('tcp.log');
    my $c = IM::TCP->new(port => port(19095));
    my $a = $c->request(publish_msg(5999, msgid(), 'from the backend'));
    is($a && $a->{cmd}, PUB_ACK, 'tcp: PUB_ACK');
    $c->close;
    my @l = access_for('tcp.log', sp => port(19095), r => 'closed by client', _skip => $skip);
    is(scalar @l, 1, 'tcp: closed by client: one stream access line');
    is($l[0] && "$l[0]{in}/$l[0]{out}/$l[0]{st}", '1/1/200',
        'tcp: closed by client: 1 in, 1 out, status 200');
    like($l[0] && $l[0]{t}, qr/^\d+\.\d{3}$/, 'tcp: $im_session_time');

    $c = IM::TCP->new(port => port(19095));
    $c->send_msg(pack('C', PUB_ACK) . ('x' x 8));
    ok($c->wait_closed($Test::Nginx::TIMEOUT), 'tcp: malformed: closed');
    @l = access_for('tcp.log', sp => port(19095), r => 'protocol error', _skip => $skip);
    is($l[0] && "$l[0]{in}/$l[0]{out}", '1/1', 'tcp: protocol error: 1 in, INVALID out');

    my $t0 = time;
    $c = IM::TCP->new(port => port(19096));
    ok($c->wait_closed(1 + $Test::Nginx::TIMEOUT), 'tcp: idle: closed');
    @l = access_for('tcp.log', sp => port(19096), r => 'idle timeout', _skip => $skip);
    is(scalar @l, 1, 'tcp: idle timeout: one stream access line');
    ok($l[0] && $l[0]{t} >= 0.99, 'tcp: idle timeout: not under 1 s');

    my @err = end_lines('backend', $mark);
    is_deeply([sort map { $_->[0] } @err],
        ['closed by client', 'idle timeout', 'protocol error'],
        'tcp: error log: a backend session-end line each');
    like($t->error_log, qr/im: backend session start.*client: 127\.0\.0\.1/,
        'tcp: error log: backend session start');
}

# server shutdown: sessions still open when nginx stops (the harness's
# worker_shutdown_timeout 3s)
my @live;
for my $tr (transports()) {
    my ($name, %o) = @$tr;
    my $c = IM::Client->new(%o, auto_pong => 1);
    my $u = $name eq 'ws' ? 5901 : 5902;
    is($c->login("u$u", 'pw'), 0, "$name: shutdown: login");
    push @live, [$name, $u, $c];
}
my $tcp = IM::TCP->new(port => port(19095));
my $ack = $tcp->request(publish_msg(5999, msgid(), 'before the stop'));
is($ack && $ack->{cmd}, PUB_ACK, 'tcp: shutdown: a request answered');
$t->stop();
for (@live) {
    my ($name, $u) = @$_;
    my @l = end_lines($u);
    is($l[0] && $l[0][0], 'server shutdown', "$name: shutdown: error log");
    is_deeply([map { $_->{r} } access_for('im.log', uid => $u)],
        ['server shutdown'], "$name: shutdown: access line");
}
is(scalar(access_for('tcp.log', r => 'server shutdown')), 1,
    'tcp: shutdown: stream access line');

# ping timeout, on a nginx of its own (PING every 1 s, 1 s to answer): a
# client that never answers
my $t2 = Test::Nginx->new()->has(qw/http/);
my $d2 = $t2->testdir;
$t2->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes 1;
im_redis ${\ $redis->addr };
im_ping_interval 1s;
im_ping_timeout 1s;
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    log_format im '$fmt';
    server {
        listen 127.0.0.1:%%PORT_9195%%;
        location = /ws { im_websocket; im_auth /_auth; access_log $d2/im.log im; }
        ${\ $uc->auth_location }
    }
}
EOF
$t2->run();
{
    my $c = IM::Client->new(port => port(9195));
    is($c->login('u5950', 'pw'), 0, 'ping: login');
    ok($c->ws->wait_closed(2 + $Test::Nginx::TIMEOUT), 'ping: closed');
    ok(wait_until(sub { $t2->error_log =~ /im: uid 5950 client 0 session end: ping timeout, /
        }), 'ping: error log: ping timeout');
    ok(wait_until(sub { -f "$d2/im.log" && $t2->read_file('im.log')
        =~ /^r=ping timeout\|uid=5950\|/m }), 'ping: access line');
}

$t->done_testing();
