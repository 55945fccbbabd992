<?php
// Counts the visits in Redis and says which replica answered.
$redis = new Redis();
$redis->connect('redis');
$redis->incr('test');
header('Content-Type: text/plain');
echo "visits: " . $redis->get('test') . "\n";
echo "served by: " . gethostname() . "\n";
