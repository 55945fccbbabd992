<?php echo gethostname(), "\n";
