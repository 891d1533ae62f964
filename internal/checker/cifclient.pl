#!/usr/bin/perl
# The lab's CIF client: it connects the way CIF v1 does (CIF::DBI): the
# [db] block of ~/.cif read by Config::Simple, a DSN of database and host
# only (no port, no timeout), DBI/DBD::Pg with AutoCommit. Nothing in its
# environment tunes libpq: it is CIF as installed.
#
# It commits one row every 50 ms. After any error it disconnects and
# connects again, reading ~/.cif again, as a CIF job started afresh does.
# On stdout, one line per commit: "ok <seq> <host> <unix time>"; errors go
# to stderr.
#
# usage: cifclient.pl ~/.cif
use strict;
use warnings;
use DBI;
use Config::Simple;
use Time::HiRes qw(time sleep);

$| = 1;
my $file = shift or die "usage: $0 CIF_FILE\n";
my ($dbh, $host);
my $seq = 0;

sub connect_db {
    my $cfg = Config::Simple->new($file) or do { warn "read $file: " . Config::Simple->error() . "\n"; return };
    my $db = $cfg->param(-block => 'db');
    $host = $db->{'host'} || 'localhost';
    my $dsn = 'DBI:Pg:database=' . ($db->{'database'} || 'cif') . ';host=' . $host;
    my $h = DBI->connect($dsn, $db->{'user'}, $db->{'password'}, { AutoCommit => 1, RaiseError => 0, PrintError => 0 });
    warn sprintf("%.3f connect %s: %s\n", time, $host, $DBI::errstr) unless $h;
    return $h;
}

$SIG{TERM} = sub { exit 0 };
while (1) {
    $dbh ||= connect_db();
    if (!$dbh) { sleep 0.02; next; }
    $seq++;
    if ($dbh->do('INSERT INTO cif_client(seq) VALUES (?)', undef, $seq)) {
        printf "ok %d %s %.6f\n", $seq, $host, time;
        sleep 0.05;
    } else {
        warn sprintf("%.3f insert on %s: %s\n", time, $host, $dbh->errstr // 'unknown error');
        $dbh->disconnect;
        undef $dbh;
        sleep 0.02;
    }
}
