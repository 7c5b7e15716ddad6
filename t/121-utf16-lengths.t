#!/usr/bin/perl
# The field client's lengths in UTF-16 units (docs/PROTOCOL.md 8; issue 18
# item 7): its CONNECT counts UserLen and PassLen in UTF-16 units, so a
# user whose name or password is not ASCII got <<10, 1>> and the client
# reconnected for ever. Now a CONNECT the strict reading refuses is read
# again with the lengths as UTF-16 units over the UTF-8 text; when that
# gives a well-formed message, the login goes on with the right bytes
# (the user centre sees them) and is counted (utf16_logins). An older
# version counts PUBLISH's Len the same way: read the same way, pushed
# with the length in bytes (utf16_messages). A message neither reading
# accepts is still a protocol violation, and the TCP API gets no second
# reading.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::TCP;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf status/;

# bytes, not characters: "张三" / "密码" in UTF-8, 2 UTF-16 units each
my $ZHANGSAN = "\xe5\xbc\xa0\xe4\xb8\x89";
my $MIMA = "\xe5\xaf\x86\xe7\xa0\x81";
# "你好", 2 units, 6 bytes
my $NIHAO = "\xe4\xbd\xa0\xe5\xa5\xbd";

my $t = Test::Nginx->new()->has(qw/http stream redis/);
my $redis = IM::Redis->new(t => $t);
my $uc = IM::UserCentre->new(t => $t,
    users => "$ZHANGSAN $MIMA 1005\nbob bob-secret 1002\n");

write_conf($t, redis => $redis, uc => $uc,
    main => "im_check_sender on;\nim_repush_interval 60s;\n"
        . "im_ping_interval 300s;\nim_close_grace 1s;");
$t->run();

my $GID = 7;
$redis->select_cmd(1, 'SADD', "im_group:$GID", 1005, 1002);

# what the field client sends: the lengths count UTF-16 units
sub field_connect {
    my ($user, $units_user, $pass, $units_pass, @tail) = @_;
    return pack('C n', CONNECT, $units_user) . $user
        . pack('n', $units_pass) . $pass . pack('C*', @tail);
}

sub client { IM::Client->new(port => port(9095), auto_pong => 1, @_) }

my $bob = client(uid => 1002);
is($bob->login('bob', 'bob-secret'), 0, 'bob logs in');

###############################################################################
# CONNECT

my $zs = client(uid => 1005);
$zs->send(field_connect($ZHANGSAN, 2, $MIMA, 2, 1, 2));
my $ack = $zs->expect(cmd => CONNECT_ACK);
is($ack && $ack->{raw}, "\x02\x00",
    'CONNECT with UserLen 2 and PassLen 2 for 6 bytes each: accepted');

my ($req) = grep { ($_->{params}{username} // '') eq $ZHANGSAN }
    $uc->requests;
ok($req && $req->{params}{password} eq $MIMA,
    '... the user centre got the whole user name and password');

$zs->ping;
ok($zs->expect(cmd => PING_RESP), '... and the session is live');

{
    my $st = status();
    is($st->{utf16_logins}, 1, 'utf16_logins counts it');
    is($st->{logins}, 2, '... among the logins');
}

# the same user, lengths in bytes (another device): read strictly, not
# counted as a UTF-16 login
{
    my $c = client();
    $c->send(connect_msg($ZHANGSAN, $MIMA, role => 1, client_id => 3));
    my $a = $c->expect(cmd => CONNECT_ACK);
    is($a && $a->{raw}, "\x02\x00", 'the same login with byte lengths');
    is(status()->{utf16_logins}, 1, '... is not a UTF-16 login');
    $c->close(1000);
}

# a wrong password read the UTF-16 way gets the user centre's answer
{
    my $c = client();
    $c->send(field_connect($ZHANGSAN, 2, "\xe5\xaf\x86\xe9\xa9\xac", 2, 1, 2));
    my $a = $c->expect(cmd => CONNECT_ACK);
    is($a && $a->{raw}, "\x02\x03",
        'a wrong password, lengths in UTF-16 units: code 3, not <<10, 1>>');
    $c->close(1000);
}

# neither reading: U+1F600 is 2 units, a UserLen of 1 ends inside it
{
    my $c = client();
    $c->send(field_connect("\xf0\x9f\x98\x80", 1, '', 0));
    my $m = $c->expect(cmd => INVALID_PACKET);
    is($m && $m->{raw}, "\x0a\x01",
        'a UserLen that splits a surrogate pair: <<10, 1>>');
    ok($c->wait_closed(5), '... and the connection is closed');
    is($c->close_code, 1002, '... with 1002');
}

###############################################################################
# PUBLISH, GROUP_PART_PUBLISH with Len in UTF-16 units

my $text = '{"from":1005,"to":1002,"content":{"type":"text","text":"'
    . $NIHAO . '"}}';
my $units = length($text) - length($NIHAO) + 2;

{
    my $id = msgid();
    my $bytes = publish_msg(1002, $id, $text);
    substr($bytes, 1 + 4 + 32, 2) = pack('n', $units);
    $zs->send($bytes);
    my $a = $zs->expect(cmd => PUB_ACK, msgid => $id);
    ok($a, "PUBLISH with Len $units for " . length($text)
        . ' bytes: acked (and it passed the sender check)');
    my $m = $bob->expect(cmd => PUBLISH, msgid => $id);
    is($m && $m->{raw}, push_msg($id, $text),
        '... bob gets it with Len in bytes');
    $bob->ack($id) if $m;
}

{
    my $p = '{"from":1005,"gid":7,"text":"' . $NIHAO . '"}';
    my $id = msgid();
    my $bytes = part_publish_msg($GID, $id, [1002], $p);
    substr($bytes, 1 + 4 + 32 + 2 + 4, 2) = pack('n',
        length($p) - length($NIHAO) + 2);
    $zs->send($bytes);
    ok($zs->expect(cmd => GROUP_PART_PUB_ACK, msgid => $id),
        'GROUP_PART_PUBLISH with Len in UTF-16 units: acked');
    my $m = $bob->expect(cmd => GROUP_PART_PUBLISH, msgid => $id);
    is($m && $m->{raw}, part_push_msg($GID, $id, [1002], $p),
        '... bob gets the uid list as sent and Len in bytes');
    $bob->ack($id) if $m;
}

is(status()->{utf16_messages}, 2, 'utf16_messages counts both');

# the sender check reads the whole payload: a spoof is still refused
{
    my $p = '{"from":1003,"to":1002,"text":"' . $NIHAO . '"}';
    my $id = msgid();
    my $bytes = publish_msg(1002, $id, $p);
    substr($bytes, 1 + 4 + 32, 2) = pack('n', length($p) - 4);
    $zs->send($bytes);
    my $m = $zs->expect(cmd => INVALID_PACKET);
    is($m && $m->{raw}, invalid_packet(PUBLISH, $id),
        'a UTF-16 PUBLISH from someone else: refused by the sender check');
    is(status()->{utf16_messages}, 3, '... it was read the UTF-16 way');
}

###############################################################################
# the TCP API: no second reading, a violation

{
    my $tcp = IM::TCP->new(port => port(19095));
    my $bytes = publish_msg(1002, msgid(), $NIHAO);
    substr($bytes, 1 + 4 + 32, 2) = pack('n', 2);
    $tcp->send_msg($bytes);
    my $m = $tcp->recv_decoded;
    is($m && $m->{raw}, "\x0a\x03",
        'TCP API: a Len in UTF-16 units is a violation');
    ok($tcp->wait_closed(5), '... and the connection is closed');
    is(status()->{utf16_messages}, 3, '... not counted');
}

$_->close(1000) for $zs, $bob;

$t->done_testing();
