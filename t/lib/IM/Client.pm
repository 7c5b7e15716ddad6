package IM::Client;

# Protocol-level client on IM::WS.
#
#   my $c = IM::Client->new(port => port(9095), auto_pong => 1);
#   is($c->login('alice', 'alice-secret'), 0, 'login');
#   my $id = $c->publish(1002, 'hello');
#   ok($c->expect(cmd => 4, msgid => $id), 'acked');
#   my $m = $bob->expect(cmd => 3);   # { cmd, msgid, payload, json, text }

use strict;
use warnings;

use IM::WS;
use IM::Proto qw/:all/;
use JSON::PP ();
use Time::HiRes qw/time/;

my $JSON = JSON::PP->new->utf8->canonical;

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        timeout   => $o{timeout} // $IM::WS::TIMEOUT,
        auto_pong => $o{auto_pong} // 0,
        auto_ack  => $o{auto_ack} // 0,
        uid       => $o{uid},
        queue     => [],
    }, $class;
    $self->{ws} = IM::WS->new(path => '/ws', %o);
    return $self;
}

sub ws       { $_[0]{ws} }
sub upgraded { $_[0]{ws}->upgraded }
sub user     { $_[0]{user} }

sub uid {
    my ($self, @v) = @_;
    $self->{uid} = $v[0] if @v;
    return $self->{uid};
}

sub auto_ack {
    my ($self, $on) = @_;
    $self->{auto_ack} = $on // 1;
    return $self;
}

sub auto_pong {
    my ($self, $on) = @_;
    $self->{auto_pong} = $on // 1;
    return $self;
}

# a protocol message as one binary WebSocket message
sub send {
    my ($self, $bytes) = @_;
    return $self->{ws}->send_binary($bytes);
}

# CONNECT; returns the CONNECT_ACK code, undef on timeout/close
sub login {
    my ($self, $user, $pass, %o) = @_;
    $self->{user} = $user;
    $self->{uid} = $o{uid} if defined $o{uid};
    return undef unless $self->{ws}->upgraded;
    $self->send(connect_msg($user, $pass, role => $o{role},
        client_id => $o{client_id})) or return undef;
    my $m = $self->expect(cmd => CONNECT_ACK, timeout => $o{timeout})
        or return undef;
    $self->{login_code} = $m->{code};
    return $m->{code};
}

sub login_code { $_[0]{login_code} }

# the apps' JSON payload convention
sub _payload {
    my ($self, $to, $content, %o) = @_;
    return $content if $o{raw};
    my $p = ref $content eq 'HASH' && !exists $o{wrap} ? $content : {
        from    => $o{from} // $self->{uid} // $self->{user},
        to      => $to,
        content => ref $content ? $content : { type => 'text', text => $content // '' },
        (defined $o{role} ? (role => $o{role}) : ()),
    };
    return $JSON->encode($p);
}

# all return the MsgId used. Options: msgid, raw (payload bytes as given),
# from, role
sub publish {
    my ($self, $to, $content, %o) = @_;
    my $id = $o{msgid} // msgid();
    $self->send(publish_msg($to, $id, $self->_payload($to, $content, %o)));
    return $id;
}

sub group_publish {
    my ($self, $gid, $content, %o) = @_;
    my $id = $o{msgid} // msgid();
    $self->send(group_publish_msg($gid, $id,
        $self->_payload($gid, $content, %o)));
    return $id;
}

sub part_publish {
    my ($self, $gid, $uids, $content, %o) = @_;
    my $id = $o{msgid} // msgid();
    $self->send(part_publish_msg($gid, $id, $uids,
        $self->_payload($gid, $content, %o)));
    return $id;
}

sub ack {
    my ($self, $id, %o) = @_;
    return $self->send(ack_msg($o{cmd} // PUB_ACK, $id));
}

sub ping       { $_[0]->send(ping_msg()) }
sub ping_resp  { $_[0]->send(ping_resp_msg()) }
sub disconnect { $_[0]->send(disconnect_msg()) }

sub _decorate {
    my ($m) = @_;
    if (defined $m->{payload}) {
        my $j = eval { $JSON->decode($m->{payload}) };
        if (ref $j eq 'HASH') {
            $m->{json} = $j;
            $m->{text} = $j->{content}{text}
                if ref $j->{content} eq 'HASH';
        }
    }
    return $m;
}

# next message from the wire (no queue); handles auto_pong / auto_ack
sub _read {
    my ($self, $deadline) = @_;
    while (1) {
        my $left = $deadline - time;
        return undef if $left <= 0;
        my $bytes = $self->{ws}->recv_message($left);
        return undef unless defined $bytes;
        my $m = _decorate(decode_server($bytes));
        $m->{opcode} = $self->{ws}->last_opcode;
        if ($self->{auto_pong} && $m->{cmd} == PING) {
            $self->send(ping_resp_msg());
            next;
        }
        if ($self->{auto_ack} && $IM::Proto::ACK_FOR{$m->{cmd}} && defined $m->{msgid}) {
            $self->send(ack_msg($IM::Proto::ACK_FOR{$m->{cmd}}, $m->{msgid}));
        }
        return $m;
    }
}

sub _deadline {
    my ($self, %o) = @_;
    return time + ($o{timeout} // $self->{timeout});
}

# next decoded server message (queued ones first); undef on timeout/close
sub next {
    my ($self, %o) = @_;
    return shift @{$self->{queue}} if @{$self->{queue}};
    return $self->_read($self->_deadline(%o));
}

# next message of that cmd (and msgid, when given); others are queued
sub expect {
    my ($self, %o) = @_;
    my $match = sub {
        my ($m) = @_;
        return 0 if defined $o{cmd} && $m->{cmd} != $o{cmd};
        return 0 if defined $o{msgid} && ($m->{msgid} // '') ne $o{msgid};
        return 1;
    };
    my $q = $self->{queue};
    for my $i (0 .. $#$q) {
        return splice(@$q, $i, 1) if $match->($q->[$i]);
    }
    my $deadline = $self->_deadline(%o);
    while (my $m = $self->_read($deadline)) {
        return $m if $match->($m);
        push @$q, $m;
    }
    return undef;
}

# every message arriving within $seconds (queued ones first)
sub drain {
    my ($self, $seconds) = @_;
    my @all = splice @{$self->{queue}};
    my $deadline = time + ($seconds // 0.5);
    while (my $m = $self->_read($deadline)) {
        push @all, $m;
    }
    return @all;
}

# true when no message is queued and none arrives within $seconds
sub nothing_for {
    my ($self, $seconds) = @_;
    return 0 if @{$self->{queue}};
    my $m = $self->_read(time + ($seconds // 1));
    return 1 unless $m;
    push @{$self->{queue}}, $m;
    return 0;
}

sub pending { @{$_[0]{queue}} }

sub close       { my $s = shift; $s->{ws}->close(@_) }
sub wait_closed { my $s = shift; $s->{ws}->wait_closed(@_) }
sub close_code  { $_[0]{ws}->close_code }
sub is_closed   { $_[0]{ws}->is_closed }

1;
