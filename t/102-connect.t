#!/usr/bin/perl
# CONNECT (docs/PROTOCOL.md 3.1, 7) over ws and wss: the three field variants
# (no role, role, role + ClientId) and what the user centre receives for
# them; trailing / truncated CONNECT -> <<10,1>> and close; first message
# not CONNECT -> closed without reply; no CONNECT within
# im_connect_timeout -> closed; a second CONNECT on a live session -> 1;
# headers and urlencoded body of the user-centre request.
use strict;
use warnings;
use utf8;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::WS;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => <<'U');
slow1001 * delay:2.6:1001
slow2001 * delay:2.6:2001
* * uid-from-name
U
# im_connect_timeout 2s: every client here sends its CONNECT right after the
# handshake and must make it in time on a loaded machine too; the one that
# waits on purpose waits 0.8 s of the 2
write_conf($t, redis => $redis, uc => $uc,
    main => "im_connect_timeout 2s;\nim_close_grace 2s;",
    body => 'username=$im_username&password=$im_password'
        . '&role=$im_role&client_id=$im_client_id');
$t->run();

# the user-centre request made for username $u (the last one)
sub uc_request {
    my ($u) = @_;
    my ($r) = grep { ($_->{params}{username} // '') eq $u } reverse $uc->requests;
    return $r;
}

# data messages received until the connection closes (within $s seconds):
# (closed?, [messages])
sub until_closed {
    my ($c, $s) = @_;
    my @m;
    my $deadline = time + $s;
    while (time < $deadline) {
        my $m = $c->next(timeout => $deadline - time);
        last unless $m;
        push @m, $m;
    }
    return ($c->ws->wait_closed(0.2) ? 1 : 0, \@m);
}

# messages until $done->([messages so far]) is true (within the harness's
# bound), then whatever else comes within $extra seconds
sub collect {
    my ($c, $done, $extra) = @_;
    my @m;
    my $deadline = time + $Test::Nginx::TIMEOUT;
    until ($done->(\@m)) {
        my $m = $c->next(timeout => $deadline - time) or last;
        push @m, $m;
    }
    push @m, $c->drain($extra);
    return @m;
}

my $n = 1100;
each_transport(sub {
    my ($name, $i, %o) = @_;
    $n += 1000 * $i;

    # -- the three variants of CONNECT
    my @variants = (
        ['no role', {}, '0', '0'],
        ['role 1', { role => 1 }, '1', '0'],
        ['role 2 + ClientId 3', { role => 2, client_id => 3 }, '2', '3'],
        ['role 0 + ClientId 127', { role => 0, client_id => 127 }, '0', '127'],
    );
    for my $v (@variants) {
        my ($what, $opt, $role, $cid) = @$v;
        my $user = 'v' . ++$n;
        my $c = IM::Client->new(%o, auto_pong => 1);
        is($c->login($user, 'pw', %$opt), 0, "$name: CONNECT $what accepted");
        my $r = uc_request($user);
        is($r && $r->{params}{role}, $role, "$name: $what: \$im_role is $role");
        is($r && $r->{params}{client_id}, $cid, "$name: $what: \$im_client_id is $cid");
        # the session is live: a message to itself comes back
        my $id = $c->publish($n, 'self');
        ok($c->expect(cmd => PUB_ACK, msgid => $id), "$name: $what: session live (PUB_ACK)");
        my $p = $c->expect(cmd => PUBLISH, msgid => $id);
        ok($p, "$name: $what: push to itself") and $c->ack($id);
        $c->close(1000);
    }

    # -- a byte after ClientId: protocol violation
    {
        my $c = IM::Client->new(%o);
        $c->send(connect_msg('v' . ++$n, 'pw', role => 1, client_id => 2) . "\x00");
        my ($closed, $m) = until_closed($c, $Test::Nginx::TIMEOUT);
        is(join(' ', map { hexdump($_->{raw}) } @$m), '0a 01',
            "$name: trailing byte after ClientId -> exactly <<10,1>>");
        ok($closed, "$name: ... and the connection is closed");
    }

    # -- UserLen pointing past the end
    {
        my $c = IM::Client->new(%o);
        $c->send("\x01\x00\x20abc");
        my ($closed, $m) = until_closed($c, $Test::Nginx::TIMEOUT);
        is(join(' ', map { hexdump($_->{raw}) } @$m), '0a 01',
            "$name: truncated CONNECT -> exactly <<10,1>>");
        ok($closed, "$name: ... and the connection is closed");
    }

    # -- first message not CONNECT: closed, no reply
    for my $first (['PING', ping_msg()], ['PUBLISH', publish_msg(1, msgid(), 'x')],
        ['PUB_ACK', pub_ack(msgid())], ['unknown cmd 99', "\x63abc"])
    {
        my ($what, $bytes) = @$first;
        my $c = IM::Client->new(%o);
        $c->send($bytes);
        my ($closed, $m) = until_closed($c, $Test::Nginx::TIMEOUT);
        ok($closed, "$name: first message $what -> connection closed");
        is(scalar @$m, 0, "$name: first message $what -> no reply")
            or diag(join ', ', map { hexdump($_->{raw}) } @$m);
    }

    # -- no CONNECT within im_connect_timeout (2s): closed, not before the 2 s
    # ($t0 is taken before connecting, so the server's timer starts after
    # it); how much later is the machine's business (the wait is bounded,
    # and well below the default of 10 s)
    {
        my $t0 = time;
        my $c = IM::Client->new(%o);
        my ($closed, $m) = until_closed($c, 2 + $Test::Nginx::TIMEOUT);
        my $dt = time - $t0;
        ok($closed, "$name: silent connection closed");
        ok($dt > 1.7, "$name: ... not before im_connect_timeout (2s): "
            . sprintf('%.2fs', $dt));
        is(scalar @$m, 0, "$name: ... without a protocol message");
    }
    # a CONNECT within the time is fine even close to the limit
    {
        my $c = IM::Client->new(%o, auto_pong => 1);
        sleep 0.8;
        is($c->login('v' . ++$n, 'pw'), 0, "$name: CONNECT after 0.8s accepted");
        ok($c->nothing_for(1.6), "$name: ... and the session is not closed by the connect timer");
        ok(!$c->is_closed, "$name: ... still open");
    }

    # -- the connect timer stops at CONNECT: a user centre slower than
    # im_connect_timeout (2.6s > 2s) still gets its answer through
    {
        my $c = IM::Client->new(%o, auto_pong => 1);
        is($c->login('slow' . (1001 + 1000 * $i), 'pw', timeout => 2.6 + $Test::Nginx::TIMEOUT), 0,
            "$name: login answered after 2.6s (> im_connect_timeout) is accepted");
        ok(!$c->is_closed && $c->nothing_for(1.2), "$name: ... and the session stays");
    }

    # -- pipelined: the client does not wait for CONNECT_ACK
    {
        my $user = 'v' . ++$n;
        my $c = IM::Client->new(%o, auto_pong => 1);
        my $id = msgid();
        $c->ws->send_raw(IM::WS::build_frame(opcode => 2, payload => connect_msg($user, 'pw'))
            . IM::WS::build_frame(opcode => 2, payload => publish_msg($n, $id, 'pipelined'))
            . IM::WS::build_frame(opcode => 2, payload => ping_msg()));
        # (all four answers, waited for within the harness bound, and
        # whatever else comes right after)
        my %want = (CONNECT_ACK, 1, PUB_ACK, 1, PING_RESP, 1, PUBLISH, 1);
        my @m = collect($c, sub { my %got = map { $_->{cmd} => 1 } @{$_[0]};
            !grep { !$got{$_} } keys %want }, 0.3);
        my $pub = pub_ack($id);
        my @r = map { hexdump($_->{raw}) } grep { $_->{cmd} != PUBLISH } @m;
        is($r[0], '02 00', "$name: CONNECT, PUBLISH, PING in one write -> CONNECT_ACK 0 first");
        # (PUB_ACK waits for Redis, PING_RESP does not: their order is free)
        my @w = (hexdump($pub), '08');
        is(join(' | ', sort @r[1 .. $#r]), join(' | ', sort @w),
            "$name: ... then PUB_ACK and PING_RESP");
        ok(grep({ $_->{cmd} == PUBLISH && $_->{msgid} eq $id } @m), "$name: ... and the pipelined PUBLISH is delivered");
        $c->ack($id);
        $c = IM::Client->new(%o, auto_pong => 1);
        $user = 'v' . ++$n;
        $c->ws->send_raw(IM::WS::build_frame(opcode => 2, payload => connect_msg($user, 'pw'))
            . IM::WS::build_frame(opcode => 2, payload => connect_msg($user, 'pw')));
        is(join(' | ', map { hexdump($_->{raw}) }
                collect($c, sub { @{$_[0]} >= 2 }, 0.3)), '02 00 | 02 01',
            "$name: two CONNECTs in one write -> 0, then 1");
    }

    # -- a second CONNECT on a live session
    {
        my $c = IM::Client->new(%o, auto_pong => 1);
        my $user = 'v' . ++$n;
        is($c->login($user, 'pw'), 0, "$name: first CONNECT accepted");
        my $before = grep { ($_->{params}{username} // '') eq $user } $uc->requests;
        is($c->login($user, 'pw'), 1, "$name: second CONNECT on the live session -> 1");
        my $m = $c->ws->conn;    # keep the socket
        is($c->login('v' . ++$n, 'pw'), 1, "$name: CONNECT as another user on it -> 1")
            unless $c->is_closed;
    }
});

# -- what the user centre receives: headers and an urlencoded body
{
    my %o = (transports())[0]->@[1 .. 4];
    my $user = "u1077 a&b=c+d%e f/ü|##|src|##|7;?#\x{0}";
    my $pass = "p&s=w+r%d ü'\"<>\x01\x{ff}";
    utf8::encode($user);
    utf8::encode($pass);
    my $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login($user, $pass, role => 3, client_id => 2), 0,
        'special characters: login accepted (uid from the name)');
    my ($r) = grep { ($_->{params}{username} // '') eq $user } $uc->requests;
    ok($r, 'user centre got the username back, byte for byte after decoding');
    is($r && $r->{params}{password}, $pass, 'password byte for byte after decoding');
    is($r && $r->{method}, 'POST', 'method POST');
    is($r && $r->{accept}, 'application/json', 'Accept: application/json');
    is($r && $r->{content_type}, 'application/x-www-form-urlencoded;charset=utf-8',
        'Content-Type: application/x-www-form-urlencoded;charset=utf-8');
    my $body = $r ? $r->{body} : '';
    like($body, qr/\Ausername=[A-Za-z0-9%+._~*-]*&password=[A-Za-z0-9%+._~*-]*&role=3&client_id=2\z/,
        'body: four fields, values urlencoded (no raw & = space % or non-ASCII)')
        or diag($body);
    my $id = $c->publish(1077, 'hi');
    ok($c->expect(cmd => PUB_ACK, msgid => $id), 'special characters: the session is live');
}

$t->done_testing();
