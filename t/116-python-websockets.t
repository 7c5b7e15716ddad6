#!/usr/bin/perl
# An independent WebSocket implementation drives the server: Debian's
# python3-websockets (/usr/bin/python3), over ws and wss. The script logs
# two users in, publishes from one to the other (once as a fragmented
# message), receives the push and the PUB_ACK, acks, exchanges a client
# PING, and closes with the RFC 6455 close handshake (close code 1000 seen
# by the library). Results come back as JSON lines.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use JSON::PP;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport/;

my $PY = '/usr/bin/python3';
plan(skip_all => "no $PY with the websockets module")
    unless -x $PY && system($PY, '-c', 'import websockets') == 0;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t, users => <<'U');
alice alice-secret 15001
bob   bob-secret   15002
carol carol-secret 15003
dave  dave-secret  15004
U
write_conf($t, redis => $redis, uc => $uc);
$t->run();

$t->write_file('client.py', <<'PY');
import asyncio, json, ssl, struct, sys
import websockets

uri, user_a, pass_a, user_b, pass_b, uid_b = sys.argv[1:7]
uid_b = int(uid_b)

def out(**kw):
    print(json.dumps(kw), flush=True)

def connect_msg(u, p, role=1, client_id=2):
    u, p = u.encode(), p.encode()
    return bytes([1]) + struct.pack('>H', len(u)) + u + struct.pack('>H', len(p)) + p + bytes([role, client_id])

async def recv_cmd(ws, cmd, timeout=5):
    while True:
        m = await asyncio.wait_for(ws.recv(), timeout)
        if not isinstance(m, bytes):
            out(event='text_message', data=m)
            continue
        if m[0] == 7:                      # server PING: answer
            await ws.send(bytes([8]))
            continue
        if m[0] == cmd:
            return m
        out(event='other', hex=m.hex())

async def main():
    ctx = None
    if uri.startswith('wss:'):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    async with websockets.connect(uri, ssl=ctx, compression=None) as a, \
               websockets.connect(uri, ssl=ctx, compression=None) as b:
        await a.send(connect_msg(user_a, pass_a))
        ack = await recv_cmd(a, 2)
        out(event='connect_ack', who='a', hex=ack.hex())
        await b.send(connect_msg(user_b, pass_b))
        ack = await recv_cmd(b, 2)
        out(event='connect_ack', who='b', hex=ack.hex())

        for i, fragmented in ((1, False), (2, True)):
            msgid = ('%032x' % (0xabcdef0000 + i)).encode()
            payload = json.dumps({'from': user_a, 'to': uid_b,
                'content': {'type': 'text', 'text': 'hello from python %d' % i}}).encode()
            msg = bytes([3]) + struct.pack('>I', uid_b) + msgid + struct.pack('>H', len(payload)) + payload
            if fragmented:
                await a.send([msg[:1], msg[1:20], msg[20:]])
            else:
                await a.send(msg)
            pa = await recv_cmd(a, 4)
            out(event='pub_ack', n=i, hex=pa.hex(), want=(bytes([4]) + msgid).hex())
            push = await recv_cmd(b, 3)
            out(event='push', n=i, hex=push.hex(),
                want=(bytes([3]) + msgid + struct.pack('>H', len(payload)) + payload).hex())
            await b.send(bytes([4]) + msgid)

        await a.send(bytes([7]))
        pr = await recv_cmd(a, 8)
        out(event='ping_resp', hex=pr.hex())
        pong = await a.ping(b'py')
        await asyncio.wait_for(pong, 5)
        out(event='ws_pong')

        await a.close()
        await b.close()
        out(event='closed', a=a.close_code, b=b.close_code)

asyncio.run(main())
PY

each_transport(sub {
    my ($name, $i, %o) = @_;
    my ($ua, $pa, $ub, $pb, $uidb) = $i == 0
        ? ('alice', 'alice-secret', 'bob', 'bob-secret', 15002)
        : ('carol', 'carol-secret', 'dave', 'dave-secret', 15004);
    my $scheme = $o{ssl} ? 'wss' : 'ws';
    my $uri = "$scheme://127.0.0.1:$o{port}$o{path}";
    my $cmd = join ' ', map { "'$_'" } $PY, $t->testdir . '/client.py',
        $uri, $ua, $pa, $ub, $pb, $uidb;
    my $output = `timeout 30 $cmd 2>&1`;
    my $rc = $? >> 8;
    my @ev = map { eval { decode_json($_) } // { event => 'raw', line => $_ } }
        split /\n/, $output;
    my %first;
    for my $e (@ev) { push @{$first{$e->{event}}}, $e }
    is($rc, 0, "$name: python client exited 0") or diag($output);

    my @ca = @{$first{connect_ack} // []};
    is(join(',', map { $_->{hex} } @ca), '0200,0200', "$name: both logins -> <<2,0>>");
    for my $n (1, 2) {
        my $what = $n == 1 ? 'one frame' : 'fragmented';
        my ($pa) = grep { $_->{n} == $n } @{$first{pub_ack} // []};
        ok($pa && $pa->{hex} eq $pa->{want}, "$name: PUBLISH ($what) -> PUB_ACK <<4, MsgId>>");
        my ($pu) = grep { $_->{n} == $n } @{$first{push} // []};
        ok($pu && $pu->{hex} eq $pu->{want}, "$name: ($what) the recipient gets <<3, MsgId, Len, Payload>>");
    }
    is(($first{ping_resp} // [{}])->[0]{hex}, '08', "$name: client PING -> <<8>>");
    ok($first{ws_pong}, "$name: WebSocket ping -> pong (library's own check)");
    my $cl = ($first{closed} // [{}])->[0];
    is($cl->{a}, 1000, "$name: close handshake completed, code 1000 (sender)");
    is($cl->{b}, 1000, "$name: close handshake completed, code 1000 (recipient)");
    ok(!$first{text_message}, "$name: no text messages from the server");
    is(join(' ', map { $_->{hex} } @{$first{other} // []}), '', "$name: nothing unexpected");

    # the acks the python recipient sent were taken: nothing comes back
    my $c = IM::Client->new(%o, auto_pong => 1);
    is($c->login($ub, $pb, role => 1, client_id => 2), 0, "$name: recipient logs in again (harness)");
    ok(!grep({ $_->{cmd} == PUBLISH } $c->drain(1)), "$name: the python client's acks counted");
    $c->close(1000);
});

$t->done_testing();
